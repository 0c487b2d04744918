//! Source nodes: items that come from files on disk. Their keys depend on file *contents*
//! (hashed once, memoised by inode and mtime), never on paths.

pub mod captions;
pub mod decode;
pub mod images;

use std::path::Path;

use nsync_cache::Digest;
use nsync_engine::node::{NodeError, WorkItem};

/// The bytes of `item`'s file at `path`, refused unless they are the content its key was
/// made from (the `file` field): the file may have changed since it was hashed, and
/// nothing may be stored under the key of other content.
pub(crate) fn read_unchanged(item: &WorkItem, path: &Path) -> Result<Vec<u8>, NodeError> {
    let bytes = std::fs::read(path)
        .map_err(|e| NodeError::msg(format!("cannot read {}: {e}", path.display())))?;
    if Some(&Digest::of(&bytes)) != item.fields.get("file") {
        return Err(NodeError::msg(format!(
            "{} changed while the pipeline was running; run again",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_file_changed_since_hashing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "before").unwrap();
        let item = WorkItem {
            id: "a".into(),
            fields: BTreeMap::from([("file".to_string(), Digest::of(b"before"))]),
            source: Some(path.clone()),
            inline: None,
        };
        assert_eq!(read_unchanged(&item, &path).unwrap(), b"before");
        std::fs::write(&path, "after").unwrap();
        let e = read_unchanged(&item, &path).unwrap_err().to_string();
        assert!(e.contains("changed while the pipeline was running"), "{e}");
    }
}
