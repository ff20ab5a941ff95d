//! Replays the baggage fuzz target's regression inputs
//! (`fuzz/regressions/baggage/*`) through the same property checks.
#![cfg(feature = "http")]

#[path = "fuzz_checks/baggage.rs"]
mod check;

#[test]
#[cfg_attr(miri, ignore = "reads files: Miri isolates the file system")]
#[cfg_attr(
    not(contextvars_fuzz_corpus),
    ignore = "no fuzz/regressions/ here (not in the published package): run from a git checkout"
)]
fn baggage_fuzz_regressions_hold() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/baggage");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        check::check(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    assert!(
        replayed > 0,
        "fuzz/regressions/baggage is empty: nothing replayed"
    );
    println!("replayed {replayed} baggage fuzz regressions");
}

/// Hand-picked headers at the edges the fuzzer probes.
#[test]
fn baggage_edge_cases_hold() {
    for header in [
        &b""[..],
        b",,,",
        b"k=%",
        b"k=%4",
        b"k=%e2%82",
        b"k=%E2%82%AC",
        b"k=\xff",
        b"=v",
        b"k v=x",
        b"k=v;;;p ; q",
        b"k=a%2Cb,k=c",
    ] {
        check::check(header);
    }
    let many: Vec<u8> = (0..300)
        .flat_map(|i| format!("k{i}=v,").into_bytes())
        .collect();
    check::check(&many);
    let long: Vec<u8> = [b"a=".to_vec(), vec![b'x'; 9000]].concat();
    check::check(&long);
}
