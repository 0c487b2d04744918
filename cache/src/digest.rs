//! Digests and the framed hasher that every cache key is built with.
//!
//! A [`Digest`] is a blake3 hash, shown and stored as 64 lowercase hex characters.
//! [`FramedHasher`] makes hashing of structured data unambiguous: each field is written as a
//! tag, a length and the bytes, so `("ab", "c")` and `("a", "bc")` never collide, and a
//! domain string separates keys of different purposes.

use std::fmt;
use std::str::FromStr;

use crate::CacheError;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// First 12 hex characters, for humans.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }

    /// Derive a u64 (seeds) from the first 8 bytes.
    pub fn to_u64(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl FromStr for Digest {
    type Err = CacheError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(CacheError::BadDigest(s.to_string()));
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).map_err(|_| CacheError::BadDigest(s.into()))?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| CacheError::BadDigest(s.into()))?;
        }
        Ok(Digest(out))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A hasher for structured data: domain-separated, every field tagged and length-framed.
pub struct FramedHasher(blake3::Hasher);

impl FramedHasher {
    /// `domain` names the purpose and its version, e.g. `"nsync.node-key.v1"`.
    pub fn new(domain: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&(domain.len() as u64).to_le_bytes());
        h.update(domain.as_bytes());
        FramedHasher(h)
    }

    /// Write one field: a one-byte tag, the length, the bytes.
    pub fn field(&mut self, tag: u8, bytes: &[u8]) -> &mut Self {
        self.0.update(&[tag]);
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn str(&mut self, tag: u8, s: &str) -> &mut Self {
        self.field(tag, s.as_bytes())
    }

    pub fn u64(&mut self, tag: u8, v: u64) -> &mut Self {
        self.field(tag, &v.to_le_bytes())
    }

    pub fn digest(&mut self, tag: u8, d: &Digest) -> &mut Self {
        self.field(tag, &d.0)
    }

    pub fn finish(&self) -> Digest {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(
            d.to_hex(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
    }

    #[test]
    fn framing_separates_fields() {
        let a = FramedHasher::new("t").str(1, "ab").str(1, "c").finish();
        let b = FramedHasher::new("t").str(1, "a").str(1, "bc").finish();
        assert_ne!(a, b);
        let c = FramedHasher::new("u").str(1, "ab").str(1, "c").finish();
        assert_ne!(a, c, "domain separates");
    }

    #[test]
    fn bad_digest_rejected() {
        assert!("xyz".parse::<Digest>().is_err());
        assert!("zz".repeat(32).parse::<Digest>().is_err());
    }
}
