//! The blake3 of an upload kept in the store, computed without reading its
//! bytes back. blake3 is a tree: a part of `part_size` bytes (a power of
//! two) at a multiple of `part_size` is a whole subtree, so the node that
//! uploads a part keeps its chaining value in the index, and whichever node
//! finishes the upload merges those values with the last bytes' own, in
//! the shape blake3 gives the whole input (`left_subtree_len` at each level).

use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};

/// The chaining value of `data`, the bytes at `offset` of an upload; `data`
/// is a whole part, or the last bytes after the last whole part.
pub(super) fn part_cv(offset: u64, data: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// The blake3 of parts whose chaining values are `parts` followed by `last`
/// (the bytes after them). `None` for the one shape a chaining value cannot
/// finish: a single part and nothing after it (a PATCH never leaves that:
/// a part is only sent once a byte follows it).
pub(super) fn root(parts: &[ChainingValue], part_size: u64, last: &[u8]) -> Option<blake3::Hash> {
    if parts.is_empty() {
        return Some(blake3::hash(last));
    }
    if parts.len() == 1 && last.is_empty() {
        return None;
    }
    let whole = parts.len() as u64 * part_size;
    let tree = Tree { parts, part_size, last: (!last.is_empty()).then(|| part_cv(whole, last)) };
    let total = whole + last.len() as u64;
    let left = left_subtree_len(total);
    Some(merge_subtrees_root(&tree.cv(0, left), &tree.cv(left, total - left), Mode::Hash))
}

struct Tree<'p> {
    parts: &'p [ChainingValue],
    part_size: u64,
    last: Option<ChainingValue>,
}

impl Tree<'_> {
    /// The chaining value of the subtree of `len` bytes at `start`. Splits
    /// always fall on part boundaries: `part_size` is a power of two, so the
    /// left subtree of anything longer than a part is whole parts.
    fn cv(&self, start: u64, len: u64) -> ChainingValue {
        if len <= self.part_size {
            let index = (start / self.part_size) as usize;
            return match self.parts.get(index) {
                Some(cv) => *cv,
                None => self.last.expect("bytes after the last part"),
            };
        }
        let left = left_subtree_len(len);
        merge_subtrees_non_root(&self.cv(start, left), &self.cv(start + left, len - left), Mode::Hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape of parts and last bytes gives blake3's own hash.
    #[test]
    fn merged_parts_hash_as_the_whole() {
        let part_size = 4096u64;
        let data: Vec<u8> = (0..part_size * 9 + 700).map(|i| (i * 31 % 251) as u8).collect();
        for parts in 0..=8u64 {
            for last in [0, 1, 1023, 1024, 1025, 4095, 4096] {
                let whole = (parts * part_size) as usize;
                let bytes = &data[..whole + last];
                let cvs: Vec<_> = (0..parts)
                    .map(|i| {
                        let at = (i * part_size) as usize;
                        part_cv(i * part_size, &data[at..at + part_size as usize])
                    })
                    .collect();
                let merged = root(&cvs, part_size, &bytes[whole..]);
                if parts == 1 && last == 0 {
                    assert_eq!(merged, None);
                } else {
                    assert_eq!(merged, Some(blake3::hash(bytes)), "{parts} parts and {last} bytes");
                }
            }
        }
    }
}
