//! RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proofs.
//!
//! Leaf hash `SHA-256(0x00 || data)`, interior node `SHA-256(0x01 || left || right)`,
//! and the tree over `n` leaves split at the largest power of two below `n`, so any
//! tree size is valid and a smaller tree is always a prefix of a larger one. Proofs
//! are generated from the leaf hashes of the tree they are for and verified with the
//! RFC's iterative algorithms (2.1.3.2 and 2.1.4.2), which need only the proof.

use sha2::{Digest, Sha256};
use std::ops::Range;

pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH(D[n]): the root of the tree over `leaves` (their leaf hashes).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]): the inclusion proof of leaf `index` in the tree over `leaves`.
/// `None` when the index is outside the tree.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    let ranges = inclusion_ranges(index as u64, leaves.len() as u64)?;
    Some(roots_of(leaves, ranges))
}

/// PROOF(m, D[n]): the consistency proof between the first `m` leaves and all of
/// `leaves`. `None` unless `0 < m <= n`; empty when `m == n`.
pub fn consistency_proof(leaves: &[Hash], m: usize) -> Option<Vec<Hash>> {
    let ranges = consistency_ranges(m as u64, leaves.len() as u64)?;
    Some(roots_of(leaves, ranges))
}

fn roots_of(leaves: &[Hash], ranges: Vec<Range<u64>>) -> Vec<Hash> {
    ranges
        .into_iter()
        .map(|r| root(&leaves[r.start as usize..r.end as usize]))
        .collect()
}

/// The leaf ranges whose roots are PATH(index, D[size]), in the proof's order, so a
/// proof can be assembled from stored subtree roots instead of every leaf.
pub fn inclusion_ranges(index: u64, size: u64) -> Option<Vec<Range<u64>>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    path(index, 0..size, &mut out);
    Some(out)
}

fn path(m: u64, within: Range<u64>, out: &mut Vec<Range<u64>>) {
    let n = within.end - within.start;
    if n <= 1 {
        return;
    }
    let mid = within.start + split(n);
    if m < mid - within.start {
        path(m, within.start..mid, out);
        out.push(mid..within.end);
    } else {
        path(m - (mid - within.start), mid..within.end, out);
        out.push(within.start..mid);
    }
}

/// The leaf ranges whose roots are PROOF(m, D[size]), in the proof's order.
pub fn consistency_ranges(m: u64, size: u64) -> Option<Vec<Range<u64>>> {
    if m == 0 || m > size {
        return None;
    }
    let mut out = Vec::new();
    if m < size {
        subproof(m, 0..size, true, &mut out);
    }
    Some(out)
}

fn subproof(m: u64, within: Range<u64>, whole: bool, out: &mut Vec<Range<u64>>) {
    let n = within.end - within.start;
    if m == n {
        if !whole {
            out.push(within);
        }
        return;
    }
    let k = split(n);
    let mid = within.start + k;
    if m <= k {
        subproof(m, within.start..mid, whole, out);
        out.push(mid..within.end);
    } else {
        subproof(m - k, mid..within.end, false, out);
        out.push(within.start..mid);
    }
}

/// Levels whose perfect subtrees a log stores: every 8th, so the root of any subtree
/// is at most 2^7 stored roots (or leaves) away and a proof reads O(log n) rows.
pub const STORED_LEVEL_STEP: u32 = 8;

/// A perfect subtree: the `2^level` leaves from `index * 2^level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subtree {
    pub level: u32,
    pub index: u64,
}

impl Subtree {
    pub fn leaves(&self) -> Range<u64> {
        let start = self.index << self.level;
        start..start + (1u64 << self.level)
    }
}

/// The perfect subtrees whose roots, folded from the right with [`fold_right`], make
/// MTH of a range a proof names (one that starts at a multiple of its largest power
/// of two, as every range RFC 9162's recursion produces does).
pub fn perfect_pieces(range: Range<u64>) -> Vec<Subtree> {
    let mut pieces = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let n = range.end - start;
        let size = if n.is_power_of_two() { n } else { split(n) };
        debug_assert_eq!(start % size, 0, "an unaligned range {range:?}");
        pieces.push(Subtree {
            level: size.trailing_zeros(),
            index: start / size,
        });
        start += size;
    }
    pieces
}

/// `node(h0, node(h1, … node(hn-1, hn)))`: MTH of consecutive perfect subtrees
/// decreasing in size, from their roots.
pub fn fold_right(roots: &[Hash]) -> Hash {
    let mut acc = *roots.last().unwrap_or(&Sha256::digest([]).into());
    for left in roots.iter().rev().skip(1) {
        acc = node_hash(left, &acc);
    }
    acc
}

/// RFC 9162 2.1.3.2: whether `proof` shows `leaf` at `index` in the tree of `size`
/// leaves whose root is `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 2.1.4.2: whether `proof` shows the tree of `size2` leaves with root
/// `root2` extends the tree of `size1` leaves with root `root1`.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> bool {
    if size1 == 0 || size1 > size2 {
        return false;
    }
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    // When size1 is a power of two the old root is itself a node of the new tree and
    // the proof leaves it out.
    let (start, path) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        (first, rest)
    };
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in path {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *root1 && sr == *root2 && snode == 0
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest
/// first. Appending and the current root are O(log n), so a checkpointer can follow
/// the log without re-reading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, hash): a perfect subtree of 2^height leaves.
    stack: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash) {
        self.push_reporting(leaf, &mut Vec::new());
    }

    /// Pushes a leaf and adds to `completed` the perfect subtrees it completes at the
    /// levels a log stores (multiples of [`STORED_LEVEL_STEP`]), with their roots.
    pub fn push_reporting(&mut self, leaf: Hash, completed: &mut Vec<(Subtree, Hash)>) {
        let size = self.size + 1;
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.stack.last() {
            if height != node.0 {
                break;
            }
            self.stack.pop();
            node = (height + 1, node_hash(&left, &node.1));
            if node.0.is_multiple_of(STORED_LEVEL_STEP) {
                let subtree = Subtree {
                    level: node.0,
                    index: (size >> node.0) - 1,
                };
                completed.push((subtree, node.1));
            }
        }
        self.stack.push(node);
        self.size = size;
    }

    /// MTH of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.stack.iter().rev();
        match nodes.next() {
            None => Sha256::digest([]).into(),
            Some(&(_, last)) => nodes.fold(last, |acc, (_, left)| node_hash(left, &acc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The Certificate Transparency reference leaves and roots (RFC 6962 test data,
    /// unchanged by RFC 9162).
    fn ct_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|d| leaf_hash(&hex::decode(d).unwrap()))
        .collect()
    }

    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn roots_match_the_reference_vectors() {
        let leaves = ct_leaves();
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), h(CT_ROOTS[0]));
        for n in 1..=leaves.len() {
            assert_eq!(root(&leaves[..n]), h(CT_ROOTS[n]), "size {n}");
            frontier.push(leaves[n - 1]);
            assert_eq!(frontier.root(), h(CT_ROOTS[n]), "frontier at size {n}");
        }
    }

    #[test]
    fn inclusion_proof_matches_the_reference_vector() {
        let proof = inclusion_proof(&ct_leaves(), 0).unwrap();
        let want = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(proof, want.map(h).to_vec());
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u32).to_be_bytes()))
            .collect()
    }

    #[test]
    fn every_inclusion_proof_verifies_and_nothing_else_does() {
        let all = leaves(64);
        for n in 1..=all.len() {
            let tree = &all[..n];
            let r = root(tree);
            for i in 0..n {
                let proof = inclusion_proof(tree, i).unwrap();
                assert!(verify_inclusion(i as u64, n as u64, &tree[i], &proof, &r));
                let other = leaf_hash(b"forged");
                assert!(!verify_inclusion(i as u64, n as u64, &other, &proof, &r));
                assert!(!verify_inclusion(
                    i as u64,
                    n as u64,
                    &tree[i],
                    &proof,
                    &leaf_hash(b"other root")
                ));
                if n > 1 {
                    assert!(!verify_inclusion(
                        ((i + 1) % n) as u64,
                        n as u64,
                        &tree[i],
                        &proof,
                        &r
                    ));
                    let mut bent = proof.clone();
                    bent[0][0] ^= 1;
                    assert!(!verify_inclusion(i as u64, n as u64, &tree[i], &bent, &r));
                }
            }
            assert!(inclusion_proof(tree, n).is_none());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewrite_does_not() {
        let all = leaves(64);
        for n in 1..=all.len() {
            let rn = root(&all[..n]);
            for m in 1..=n {
                let rm = root(&all[..m]);
                let proof = consistency_proof(&all[..n], m).unwrap();
                assert!(
                    verify_consistency(m as u64, n as u64, &rm, &rn, &proof),
                    "{m} -> {n}"
                );
                // The same proof shape over a history with one old leaf changed.
                let mut rewritten = all[..n].to_vec();
                rewritten[m - 1] = leaf_hash(b"rewritten");
                let rn2 = root(&rewritten);
                let proof2 = consistency_proof(&rewritten, m).unwrap();
                assert!(!verify_consistency(m as u64, n as u64, &rm, &rn2, &proof2));
                if !proof.is_empty() {
                    let mut bent = proof.clone();
                    bent[proof.len() - 1][5] ^= 1;
                    assert!(!verify_consistency(m as u64, n as u64, &rm, &rn, &bent));
                }
            }
        }
        assert!(consistency_proof(&all[..4], 0).is_none());
        assert!(!verify_consistency(0, 4, &root(&[]), &root(&all[..4]), &[]));
    }

    #[test]
    fn proofs_assemble_from_perfect_pieces() {
        let all = leaves(300);
        let perfect = |t: Subtree| {
            let r = t.leaves();
            root(&all[r.start as usize..r.end as usize])
        };
        let assemble = |ranges: Vec<Range<u64>>| -> Vec<Hash> {
            ranges
                .into_iter()
                .map(|r| {
                    let pieces: Vec<Hash> = perfect_pieces(r).into_iter().map(perfect).collect();
                    fold_right(&pieces)
                })
                .collect()
        };
        for n in [1usize, 2, 3, 7, 64, 255, 256, 257, 300] {
            for i in (0..n).step_by(7).chain([n - 1]) {
                let want = inclusion_proof(&all[..n], i).unwrap();
                assert_eq!(
                    assemble(inclusion_ranges(i as u64, n as u64).unwrap()),
                    want
                );
            }
            for m in (1..=n).step_by(5).chain([n]) {
                let want = consistency_proof(&all[..n], m).unwrap();
                assert_eq!(
                    assemble(consistency_ranges(m as u64, n as u64).unwrap()),
                    want
                );
            }
        }
    }

    #[test]
    fn the_frontier_reports_the_subtrees_a_log_stores() {
        let all = leaves(1_000);
        let mut frontier = Frontier::new();
        let mut completed = Vec::new();
        for leaf in &all {
            frontier.push_reporting(*leaf, &mut completed);
        }
        // 1,000 leaves hold three complete 256-leaf subtrees and no 65,536-leaf one.
        let got: Vec<Subtree> = completed.iter().map(|(t, _)| *t).collect();
        let want: Vec<Subtree> = (0..3).map(|index| Subtree { level: 8, index }).collect();
        assert_eq!(got, want);
        for (subtree, hash) in completed {
            let r = subtree.leaves();
            assert_eq!(hash, root(&all[r.start as usize..r.end as usize]));
        }
    }

    #[test]
    fn frontier_follows_any_size() {
        let all = leaves(300);
        let mut frontier = Frontier::new();
        for (i, leaf) in all.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(frontier.root(), root(&all[..=i]));
            assert_eq!(frontier.size(), i as u64 + 1);
        }
    }
}
