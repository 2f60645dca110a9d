//! Lock tokens: 128 bits from a CSPRNG, fresh for every acquisition attempt.

use std::fmt;

use rand::RngCore;

/// A lock token: 128 random bits, hex-encoded for Redis.
///
/// Drawn from `rand::rng()`, a ChaCha12 CSPRNG seeded from the operating system and
/// reseeded periodically, so generating one costs no syscall. `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token([u8; 32]);

impl Token {
    pub(crate) fn generate() -> Token {
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        let mut hex = [0u8; 32];
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, byte) in raw.iter().enumerate() {
            hex[2 * i] = DIGITS[usize::from(byte >> 4)];
            hex[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
        }
        Token(hex)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tokens_are_128_bit_hex_and_fresh() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let t = Token::generate();
            assert_eq!(t.as_bytes().len(), 32);
            assert!(t.as_bytes().iter().all(u8::is_ascii_hexdigit));
            assert!(seen.insert(t.as_bytes().to_vec()), "token repeated");
        }
        assert_eq!(format!("{:?}", Token::generate()), "Token(***)");
    }
}
