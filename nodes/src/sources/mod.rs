//! Source nodes: items that come from files on disk. Their keys depend on file *contents*
//! (hashed once, memoised by inode and mtime), never on paths.

pub mod captions;
pub mod decode;
pub mod images;
