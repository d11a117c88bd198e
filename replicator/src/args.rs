//! Parsers for the values the command line takes: durations and sizes with units, addresses
//! with host names. Each error says what form is expected.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// A duration with its unit: `5s`, `500ms`, `2m`, `1h 30m`. A bare number is refused rather
/// than guessed at: some of tandem's durations used to be seconds and others milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("give the unit too, e.g. {text}s or {text}ms"));
    }
    humantime::parse_duration(text).map_err(|e| format!("not a duration ({e}); write it like 5s, 500ms or 2m"))
}

/// A size: bytes, or with a unit (`4096`, `512KiB`, `8MiB`, `1GiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    byte_unit::Byte::parse_str(text, true)
        .map(|b| b.as_u64())
        .map_err(|e| format!("not a size ({e}); write it like 4096, 512KiB, 256MiB or 1GiB"))
}

/// A size that fits in 32 bits (see [`parse_size`]).
pub fn parse_size_u32(text: &str) -> Result<u32, String> {
    let bytes = parse_size(text)?;
    u32::try_from(bytes).map_err(|_| "too large: at most 4GiB less one byte".to_string())
}

/// A socket address, `HOST:PORT` with HOST a name or an IP address (`[ADDR]:PORT` for IPv6).
/// A name that resolves to both families gives its IPv4 address: then a primary listening on
/// `localhost:7400` and a backup connecting to `localhost:7400` meet whatever order the
/// resolver lists them in.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let expected = "write HOST:PORT, e.g. 10.0.0.1:7400, localhost:7400 or [::1]:7400";
    let resolved: Vec<SocketAddr> = match text.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) if text.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) => {
            return Err(format!("cannot resolve the host ({e})"));
        }
        Err(_) => return Err(format!("not an address; {expected}")),
    };
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| "the host has no address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        let bare = parse_duration("5").unwrap_err();
        assert!(bare.contains("5s or 5ms"), "{bare}");
        assert!(parse_duration("soon").unwrap_err().contains("5s, 500ms"));
    }

    #[test]
    fn sizes_take_units_or_bytes() {
        assert_eq!(parse_size_u32("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size_u32("8GiB").unwrap_err().contains("too large"));
        let lots = parse_size("lots").unwrap_err();
        assert!(lots.contains("not a size") && lots.contains("256MiB"), "{lots}");
    }

    #[test]
    fn addresses_take_host_names() {
        assert_eq!(parse_addr("localhost:7400"), Ok("127.0.0.1:7400".parse().unwrap()));
        assert_eq!(parse_addr("10.0.0.1:7400"), Ok("10.0.0.1:7400".parse().unwrap()));
        assert_eq!(parse_addr("[::1]:7400"), Ok("[::1]:7400".parse().unwrap()));
        let no_port = parse_addr("localhost").unwrap_err();
        assert!(no_port.contains("HOST:PORT"), "{no_port}");
        let unknown = parse_addr("no-such-host.invalid:7400").unwrap_err();
        assert!(unknown.contains("cannot resolve"), "{unknown}");
    }
}
