//! Postcard's primitives, read and written by hand: the payload is decoded
//! and encoded without its types, from their description alone.

/// Postcard's primitives, from the front of `bytes`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn byte(&mut self) -> Result<u8, String> {
        let (&byte, rest) = self
            .bytes
            .split_first()
            .ok_or_else(|| "the bytes end early".to_owned())?;
        self.bytes = rest;
        Ok(byte)
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!("{n} byte(s) are wanted; {} are left", self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// A LEB128 varint of a `bits`-bit unsigned integer, refused as postcard
    /// refuses it: longer than the type's bytes, or with bits past the type.
    pub(super) fn varint(&mut self, bits: u32) -> Result<u128, String> {
        let max = bits.div_ceil(7);
        let mut value: u128 = 0;
        for i in 0..max {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == max - 1 && u32::from(byte) >> (bits - 7 * i) != 0 {
                    return Err(format!("a varint overflows a {bits}-bit integer"));
                }
                return Ok(value);
            }
        }
        Err(format!("a varint of a {bits}-bit integer is longer than {max} bytes"))
    }

    pub(super) fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint(32)?).map_err(|e| e.to_string())
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        u64::try_from(self.varint(64)?).map_err(|e| e.to_string())
    }

    /// A length prefix (postcard's `usize`, a 64-bit varint).
    pub(super) fn len(&mut self) -> Result<usize, String> {
        let len = self.u64()?;
        usize::try_from(len).map_err(|_| format!("a length of {len} does not fit this machine"))
    }

    pub(super) fn str(&mut self) -> Result<&'a str, String> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).map_err(|e| format!("a string is not UTF-8: {e}"))
    }

    pub(super) fn char(&mut self) -> Result<char, String> {
        let text = self.str()?;
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Ok(c),
            _ => Err(format!("a char holds {} characters, not one", text.chars().count())),
        }
    }
}

pub(super) fn unzigzag(n: u128) -> i128 {
    ((n >> 1) as i128) ^ -((n & 1) as i128)
}

pub(super) fn zigzag(n: i128) -> u128 {
    ((n << 1) ^ (n >> 127)) as u128
}

pub(super) fn write_varint(out: &mut Vec<u8>, mut n: u128) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

pub(super) fn write_len(out: &mut Vec<u8>, len: usize) {
    write_varint(out, len as u128);
}
