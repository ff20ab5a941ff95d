//! The persistent map (private to the crate, so tested here), restating CPython's HAMT tests (`Lib/test/test_context.py`,
//! `HamtTest`) for a map keyed by unique variable ids: a stress run against
//! `std::collections::HashMap`, deletion down to empty, iteration, equality of
//! versions, and persistence of every earlier version.

use std::collections::HashMap;

use super::node::{Child, Node, build};
use super::{Garbage, Map, Value};
use crate::counted::{Counted, Counter};

fn value(v: u64) -> Value {
    Value::new(v)
}

fn read(map: &Map, id: u64) -> Option<u64> {
    map.get(id).map(|v| *v.downcast::<u64>().unwrap())
}

fn contents(map: &Map) -> HashMap<u64, u64> {
    map.iter()
        .map(|(id, v)| (id, *v.downcast::<u64>().unwrap()))
        .collect()
}

/// A small deterministic generator, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn test_hamt_basics_1() {
    let mut g = Garbage::new();
    let empty = Map::default();
    let mut one = empty.clone();
    assert_eq!(one.insert(1, value(10), &mut g).map(|_| ()), None);
    assert_eq!(empty.len(), 0);
    assert_eq!(one.len(), 1);
    assert_eq!(read(&one, 1), Some(10));
    assert_eq!(read(&empty, 1), None);
}

#[test]
fn test_hamt_stress_against_hashmap() {
    // 100k random inserts and removals over a key space that forces deep
    // branches (ids sharing low bits) and flat/branch conversions.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut map = Map::default();
    let mut model: HashMap<u64, u64> = HashMap::new();
    let mut versions: Vec<(Map, HashMap<u64, u64>)> = Vec::new();
    let mut g = Garbage::new();
    // Miri interprets every instruction: a shorter run there.
    let steps: u64 = if cfg!(miri) { 3_000 } else { 100_000 };
    for step in 0..steps {
        let r = rng.next();
        // Keys: small dense ids, ids colliding in the low 5/10/15 bits, and huge ids.
        let key = match r % 4 {
            0 => 1 + r % 64,
            1 => 1 + ((r >> 8) % 32) * 32 * 32 * 32,
            2 => 1 + (r >> 3) % 5000,
            _ => (r >> 1) | 1,
        };
        if rng.next() % 3 == 0 {
            let got = map
                .remove(key, &mut g)
                .map(|v| *v.downcast::<u64>().unwrap());
            assert_eq!(got, model.remove(&key), "remove {key} at step {step}");
        } else {
            let got = map
                .insert(key, value(step), &mut g)
                .map(|v| *v.downcast::<u64>().unwrap());
            assert_eq!(got, model.insert(key, step), "insert {key} at step {step}");
        }
        assert_eq!(map.len(), model.len());
        if step % 997 == 0 {
            versions.push((map.clone(), model.clone()));
        }
        if step % 10_000 == 0 {
            assert_eq!(contents(&map), model);
        }
        g.clear();
    }
    assert_eq!(contents(&map), model);
    for (key, v) in &model {
        assert_eq!(read(&map, *key), Some(*v));
    }
    // Every version taken along the way is unchanged by later writes.
    for (version, expected) in &versions {
        assert_eq!(&contents(version), expected);
        assert_eq!(version.len(), expected.len());
    }
}

#[test]
fn small_maps_written_in_place_and_shared_stay_persistent() {
    // Small maps (flat roots, written in place while unique, with room left
    // by removals) against a model, with copies taken and dropped at random
    // so writes alternate between the in-place and the copying paths. Every
    // live copy is checked after every write.
    const KEYS: [u64; 9] = [1, 2, 3, 4, 5, 6, 1 + 32, 1 + 64, 1 + 32 * 32 * 32];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut g = Garbage::new();
    let rounds = if cfg!(miri) { 4 } else { 2_000 };
    for _ in 0..rounds {
        let mut map = Map::default();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut copies: Vec<(Map, HashMap<u64, u64>)> = Vec::new();
        for step in 0..60 {
            let r = rng.next();
            // Up to four entries stay flat, five or more make a branch, and
            // ids sharing their low bits with 1 make branches below it.
            let key = KEYS[(r >> 8) as usize % KEYS.len()];
            match r % 8 {
                0 => copies.push((map.clone(), model.clone())),
                1 if !copies.is_empty() => {
                    let i = (r >> 16) as usize % copies.len();
                    copies.swap_remove(i);
                }
                2..=4 => {
                    let got = map
                        .remove(key, &mut g)
                        .map(|v| *v.downcast::<u64>().unwrap());
                    assert_eq!(got, model.remove(&key), "remove {key} at step {step}");
                }
                _ => {
                    let got = map
                        .insert(key, value(step), &mut g)
                        .map(|v| *v.downcast::<u64>().unwrap());
                    assert_eq!(got, model.insert(key, step), "insert {key} at step {step}");
                }
            }
            g.clear();
            assert_eq!(map.len(), model.len());
            assert_eq!(map.is_empty(), model.is_empty());
            assert_eq!(contents(&map), model);
            for id in KEYS {
                assert_eq!(read(&map, id), model.get(&id).copied(), "id {id}");
            }
            for (copy, expected) in &copies {
                assert_eq!(&contents(copy), expected);
                assert_eq!(copy.len(), expected.len());
            }
        }
    }
}

#[test]
fn test_hamt_delete_down_to_empty() {
    let mut g = Garbage::new();
    let mut map = Map::default();
    // Ids that collide in their low bits build chains of branches.
    let keys: Vec<u64> = (0..200u64).map(|i| 1 + i * 1024).collect();
    // 1 is already among the first.
    let keys: Vec<u64> = keys.into_iter().chain(2..100).collect();
    for &k in &keys {
        map.insert(k, value(k), &mut g);
    }
    assert_eq!(map.len(), keys.len());
    let full = map.clone();
    for (n, &k) in keys.iter().enumerate() {
        assert_eq!(read(&map, k), Some(k));
        assert!(map.remove(k, &mut g).is_some());
        assert!(
            map.remove(k, &mut g).is_none(),
            "second removal of {k} finds nothing"
        );
        assert_eq!(map.len(), keys.len() - n - 1);
    }
    assert_eq!(map.len(), 0);
    assert_eq!(map.iter().count(), 0);
    assert!(map.ptr_eq(&Map::default()));
    assert_eq!(full.len(), keys.len());
    assert_eq!(contents(&full).len(), keys.len());
}

#[test]
fn test_hamt_delete_missing_shares_version() {
    let mut g = Garbage::new();
    let mut map = Map::default();
    for k in 1..40 {
        map.insert(k * 33, value(k), &mut g);
    }
    let before = map.clone();
    assert!(map.remove(12345, &mut g).is_none());
    assert!(
        map.ptr_eq(&before),
        "removing a missing key keeps the same version"
    );
}

#[test]
fn test_hamt_iteration_yields_each_entry_once() {
    let mut g = Garbage::new();
    for n in [0u64, 1, 7, 8, 9, 33, 1000] {
        let mut map = Map::default();
        for k in 0..n {
            map.insert(k * 7 + 1, value(k), &mut g);
        }
        let mut seen: Vec<u64> = map.iter().map(|(id, _)| id).collect();
        seen.sort_unstable();
        let expected: Vec<u64> = (0..n).map(|k| k * 7 + 1).collect();
        assert_eq!(seen, expected, "{n} entries");
    }
}

#[test]
fn test_hamt_eq_of_versions() {
    // Equal content built in different orders compares equal as content, and
    // a copy is the same version until it is written.
    let mut g = Garbage::new();
    let mut a = Map::default();
    let mut b = Map::default();
    for k in 1..50 {
        a.insert(k, value(k), &mut g);
    }
    for k in (1..50).rev() {
        b.insert(k, value(k), &mut g);
    }
    assert_eq!(contents(&a), contents(&b));
    let c = a.clone();
    assert!(c.ptr_eq(&a));
    let mut d = a.clone();
    d.insert(1, value(99), &mut g);
    assert!(!d.ptr_eq(&a));
    assert_ne!(contents(&d), contents(&a));
    assert_eq!(read(&a, 1), Some(1));
}

#[test]
fn a_map_made_with_room_fills_it_without_a_new_node() {
    let mut map = Map::with_room(3);
    assert!(map.is_empty() && map.iter().next().is_none() && map.get(1).is_none());
    let node = map.root.as_ref().map(Node::as_ptr).unwrap();
    let mut garbage = Garbage::new();
    for id in 1..=3 {
        assert!(map.insert(id, value(id * 10), &mut garbage).is_none());
        assert_eq!(
            map.root.as_ref().map(Node::as_ptr),
            Some(node),
            "entry {id} went into the room"
        );
    }
    assert_eq!(contents(&map), HashMap::from([(1, 10), (2, 20), (3, 30)]));
    // Past the room it grows as any map does, and reads stay right.
    map.insert(4, value(40), &mut garbage);
    map.insert(5, value(50), &mut garbage);
    assert_eq!(map.len(), 5);
    assert_eq!(read(&map, 5), Some(50));
    // No room asked: no node.
    assert!(Map::with_room(0).root.is_none());
}

/// Replacing the value of an id the map holds, on a path no other map
/// shares, is written in place (`slot_mut`) without the slow path, in a
/// flat root and in a branch two levels deep; in a map that shares its
/// nodes with a copy it is not (the copy must not change).
#[test]
fn replacing_a_value_the_map_holds_alone_takes_the_in_place_path() {
    let slow = || super::root::SLOW_INSERTS.with(std::cell::Cell::get);
    for n in [1u64, 3, 40] {
        let mut garbage = Garbage::new();
        let mut map = Map::default();
        // Ids 32 apart share their first level's slot: a second level.
        let ids: Vec<u64> = (1..=n)
            .map(|i| if i % 2 == 0 { i * 32 } else { i })
            .collect();
        for &id in &ids {
            map.insert(id, value(id), &mut garbage);
        }
        let before = slow();
        for round in 0..3 {
            for &id in &ids {
                let old = map.insert(id, value(id + round + 1), &mut garbage);
                assert_eq!(old.map(|v| *v.downcast::<u64>().unwrap()), Some(id + round));
            }
        }
        assert_eq!(slow(), before, "{n} ids: every replacement in place");
        let copy = map.clone();
        map.insert(ids[0], value(0), &mut garbage);
        assert_eq!(slow(), before + 1, "{n} ids: a shared path is copied");
        assert_eq!(read(&copy, ids[0]), Some(ids[0] + 3));
        assert_eq!(read(&map, ids[0]), Some(0));
        for &id in &ids[1..] {
            assert_eq!(read(&map, id), Some(id + 3));
        }
    }
}

/// Of two handles on one node let go of at once on two threads, exactly
/// one is handed back (and the node is then its only handle), so exactly
/// one caller drops the children.
#[test]
fn of_two_handles_let_go_at_once_exactly_one_is_handed_back() {
    let rounds = if cfg!(miri) { 20 } else { 2_000 };
    for _ in 0..rounds {
        let counter = Counter::new();
        let node = build(
            2,
            std::iter::once(Child::Entry {
                id: 1,
                value: Value::new(Counted::new(&counter)),
            }),
        );
        let other = node.clone();
        let mine = std::thread::spawn(move || node.let_go());
        let theirs = other.let_go();
        let kept: Vec<Node> = [mine.join().unwrap(), theirs]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(kept.len(), 1, "exactly one handle is the last");
        assert!(kept[0].is_unique());
        assert_eq!(counter.live(), 1, "letting go of a handle drops no child");
        drop(kept);
        assert_eq!(counter.live(), 0, "the last handle drops the children");
    }
}

/// A node whose child panics when dropped still drops its other children
/// and frees its memory (Miri reports a leak otherwise).
#[test]
fn a_node_whose_child_panics_on_drop_drops_the_rest_and_its_memory() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a child's destructor panics");
        }
    }
    let counter = Counter::new();
    let node = build(
        3,
        [
            Child::Entry {
                id: 1,
                value: Value::new(PanicsOnDrop),
            },
            Child::Entry {
                id: 2,
                value: Value::new(Counted::new(&counter)),
            },
        ]
        .into_iter(),
    );
    assert_eq!(node.len(), 3, "the slots past the children are room");
    assert!(matches!(node[2], Child::Vacant));
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(node)));
    assert!(dropped.is_err(), "the panic goes on");
    assert_eq!(counter.live(), 0, "the other child is dropped");
}
