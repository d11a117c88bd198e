use super::*;
use crate::call::Call;
use crate::record::Event;

fn geometry() -> Geometry {
    Geometry::record(4, MIN_RING_BYTES)
}

fn header(seq: u64, payload_len: u32) -> EventHeader {
    EventHeader {
        pid: LogicalPid(1),
        fd: 1,
        result: payload_len as i64,
        payload_len,
        ..EventHeader::new(Seq(seq), Call::Write)
    }
}

/// Drains one ring into (seq, payload) pairs.
fn drain(region: &Region, index: u32) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let v = region.slot_view(index);
        let Some(h) = region.peek_header(index, v.head, v.tail) else {
            break;
        };
        let mut buf = Vec::new();
        region.copy_records(index, v.head, h.record_len(), &mut buf);
        let (e, rest) = Event::parse(&buf).unwrap();
        assert!(rest.is_empty());
        out.push((e.header.seq.0, e.payload.to_vec()));
        region.advance_head(index, v.head + h.record_len() as u64);
    }
    out
}

#[test]
fn records_survive_wrap_around() {
    let shared = SharedRegion::create(geometry(), Mode::Record).unwrap();
    let region = shared.region();
    let mut p = Producer::claim(region, 1, 1, 1, 0).unwrap();
    let mut expected_seq = 1;
    // Enough odd-sized records to go round the ring several times.
    for round in 0..40u64 {
        for i in 0..50u64 {
            let len = ((round * 50 + i) * 7919 % 60_000) as usize; // a round fits in the ring: one thread writes and drains
            let payload: Vec<u8> = (0..len).map(|b| (b as u64 ^ i) as u8).collect();
            let seq = p.take_seq();
            let mut h = header(seq, len as u32);
            h.digest = crate::digest::digest(&payload);
            p.write(&h, &[&payload[..len / 3], &payload[len / 3..]]);
        }
        for (seq, payload) in drain(&region, p.index()) {
            assert_eq!(seq, expected_seq);
            expected_seq += 1;
            let i = (seq - 1) % 50;
            assert!(payload.iter().enumerate().all(|(b, &v)| v == (b as u64 ^ i) as u8));
        }
    }
    assert_eq!(expected_seq, 2001);
}

#[test]
fn full_ring_blocks_producer_until_drained() {
    let shared = SharedRegion::create(geometry(), Mode::Record).unwrap();
    let region = shared.region();
    let mut p = Producer::claim(region, 1, 1, 1, 0).unwrap();
    let index = p.index();
    let big = vec![0xabu8; MAX_PAYLOAD];
    let writer = std::thread::spawn(move || {
        for _ in 0..16 {
            let seq = p.take_seq();
            p.write(&header(seq, big.len() as u32), &[&big]);
        }
    });
    let mut got = 0;
    while got < 16 {
        got += drain(&region, index).len();
        std::thread::yield_now();
    }
    writer.join().unwrap();
}

#[test]
fn slots_are_claimed_once_and_reused_after_free() {
    let shared = SharedRegion::create(geometry(), Mode::Record).unwrap();
    let region = shared.region();
    let producers: Vec<_> = (0..4).map(|t| Producer::claim(region, 1, t, 1, t as u32).unwrap()).collect();
    assert!(Producer::claim(region, 1, 9, 1, 9).is_none());
    producers[2].close();
    assert!(region.free_slot(2));
    assert_eq!(Producer::claim(region, 1, 9, 1, 9).unwrap().index(), 2);
}

#[test]
fn attach_rejects_foreign_memory() {
    #[repr(C, align(4096))]
    struct Page([u8; PAGE]);
    let mut page = Box::new(Page([0; PAGE]));
    let base = page.0.as_mut_ptr();
    // SAFETY: `page` is a live, writable, page-aligned buffer of PAGE bytes.
    let err = unsafe { Region::attach(base, PAGE) }.err();
    assert_eq!(err, Some(LayoutError::BadMagic));
    // SAFETY: as above; one byte in is still inside the buffer.
    let err = unsafe { Region::attach(base.add(8), PAGE - 8) }.err();
    assert_eq!(err, Some(LayoutError::TooSmall { len: PAGE - 8 }));
}

#[test]
fn outside_pipes_are_known_and_the_table_fills() {
    let shared = SharedRegion::create(geometry(), Mode::Record).unwrap();
    let region = shared.region();
    assert!(!region.is_outside_pipe(7) && !region.is_outside_pipe(0));
    assert!(region.add_outside_pipe(7) && region.add_outside_pipe(7));
    assert!(region.is_outside_pipe(7));
    for inode in 8..7 + OUTSIDE_PIPES as u64 {
        assert!(region.add_outside_pipe(inode));
    }
    assert!(!region.add_outside_pipe(1000), "a full table takes no more");
    assert!(!region.is_outside_pipe(1000));
}

#[test]
fn file_locks_exclude_and_a_dead_holders_lock_is_taken_over() {
    let shared = SharedRegion::create(geometry(), Mode::Record).unwrap();
    let region = shared.region();
    let slot = inodes::inode_slot(64769, 1234);
    assert_eq!(slot, inodes::inode_slot(64769, 1234));
    assert!((slot as usize) < inodes::INODE_LOCKS);
    // Threads of this process, each adding under the lock with a non-atomic read and write.
    let counter = std::sync::Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u32)
        .map(|_| {
            let counter = counter.clone();
            std::thread::spawn(move || {
                // SAFETY: gettid takes no arguments.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
                for _ in 0..20000 {
                    region.lock_inode(slot, tid);
                    let v = counter.load(Ordering::Relaxed);
                    counter.store(v + 1, Ordering::Relaxed);
                    region.unlock_inode(slot);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter.load(Ordering::Relaxed), 80000);
    assert_eq!(region.inode_holder(slot), 0);
    // A holder whose thread no longer exists (a thread id above the kernel's limit).
    // SAFETY: gettid takes no arguments.
    let me = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    region.lock_inode(slot, (1 << 30) + 7);
    region.lock_inode(slot, me);
    assert_eq!(region.inode_holder(slot), me);
    region.unlock_inode(slot);
}
