//! The per-table sequence: increases in commit order, so "last row per key by `_seq`" is the
//! current state.
//!
//! Postgres needs two 64-bit numbers (commit LSN, then the change's position in its transaction),
//! so the lake column is a fixed-width string of 32 upper-case hex digits that sorts the same as
//! the number. Snapshot rows use the slot's consistent point minus one as their commit LSN, which
//! sorts before every transaction streamed from the slot.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u128);

impl Seq {
    pub fn new(major: u64, minor: u64) -> Seq {
        Seq(((major as u128) << 64) | minor as u128)
    }

    pub(crate) fn major(self) -> u64 {
        (self.0 >> 64) as u64
    }

    pub fn minor(self) -> u64 {
        self.0 as u64
    }

    /// Fixed-width text form; lexical order equals numeric order.
    pub(crate) fn to_fixed_hex(self) -> String {
        self.fixed_hex(&mut [0; 32]).to_string()
    }

    /// The fixed-width text form written into `buf`, without allocating (the sink writes one per
    /// row).
    pub(crate) fn fixed_hex(self, buf: &mut [u8; 32]) -> &str {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        for (i, b) in buf.iter_mut().enumerate() {
            *b = DIGITS[((self.0 >> (4 * (31 - i))) & 0xf) as usize];
        }
        // Only ASCII hex digits were written.
        std::str::from_utf8(buf).unwrap_or_default()
    }

    pub(crate) fn from_fixed_hex(s: &str) -> Option<Seq> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Seq)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_fixed_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_order_is_numeric_order() {
        let a = Seq::new(0x16B3748, 5);
        let b = Seq::new(0x16B3748, 6);
        let c = Seq::new(0x1_0000_0000, 0);
        assert!(a < b && b < c);
        assert!(a.to_fixed_hex() < b.to_fixed_hex() && b.to_fixed_hex() < c.to_fixed_hex());
        assert_eq!(Seq::from_fixed_hex(&c.to_fixed_hex()), Some(c));
        assert_eq!(b.to_fixed_hex(), format!("{:032X}", b.0));
        assert_eq!(c.major(), 0x1_0000_0000);
        assert_eq!(b.minor(), 6);
        assert_eq!(Seq::from_fixed_hex("zz"), None);
    }
}
