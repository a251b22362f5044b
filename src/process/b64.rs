//! A fast standard-alphabet base64 encoder for the output hot path.
//!
//! Why not the `base64` crate here: its portable encoder is the top entry in a streaming
//! profile. This one maps each 12-bit half of a 3-byte group to two output characters with a
//! 4096-entry table, and writes into a caller-provided buffer. The `base64` crate remains the
//! reference in the tests below and the decoder everywhere.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// 12 bits → two characters.
static PAIRS: [[u8; 2]; 4096] = {
    let mut t = [[0u8; 2]; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = [ALPHABET[i >> 6], ALPHABET[i & 63]];
        i += 1;
    }
    t
};

/// Length of the padded encoding of `n` bytes.
pub fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// 12 bits → two characters as one little-endian `u16` (first character in the low byte).
static PAIRS16: [u16; 4096] = {
    let mut t = [0u16; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = PAIRS[i][0] as u16 | ((PAIRS[i][1] as u16) << 8);
        i += 1;
    }
    t
};

/// Eight characters for the low 48 bits of `v`.
#[inline(always)]
fn eight(v: u64) -> u64 {
    PAIRS16[(v >> 36) as usize & 0xfff] as u64
        | (PAIRS16[(v >> 24) as usize & 0xfff] as u64) << 16
        | (PAIRS16[(v >> 12) as usize & 0xfff] as u64) << 32
        | (PAIRS16[v as usize & 0xfff] as u64) << 48
}

/// Appends the padded base64 encoding of `data` to `out`.
pub fn encode_into(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + encoded_len(data.len()), 0);
    let dst = &mut out[start..];
    // Six input bytes → eight characters written with one 8-byte store; zipped exact chunks
    // let the compiler drop every bounds check.
    let mut wide = data.chunks_exact(6);
    let mut wide_out = dst.chunks_exact_mut(8);
    for (c, o) in (&mut wide).zip(&mut wide_out) {
        let v = u64::from_be_bytes([0, 0, c[0], c[1], c[2], c[3], c[4], c[5]]);
        o.copy_from_slice(&eight(v).to_le_bytes());
    }
    let done = data.len() / 6 * 6;
    let data = &data[done..];
    let dst = &mut dst[done / 3 * 4..];
    let mut chunks = data.chunks_exact(3);
    let mut o = 0;
    for c in &mut chunks {
        let v = ((c[0] as usize) << 16) | ((c[1] as usize) << 8) | c[2] as usize;
        let hi = PAIRS[v >> 12];
        let lo = PAIRS[v & 0xfff];
        dst[o..o + 4].copy_from_slice(&[hi[0], hi[1], lo[0], lo[1]]);
        o += 4;
    }
    match *chunks.remainder() {
        [a] => {
            let v = (a as usize) << 4;
            let p = PAIRS[v];
            dst[o..o + 4].copy_from_slice(&[p[0], p[1], b'=', b'=']);
        }
        [a, b] => {
            let v = ((a as usize) << 16) | ((b as usize) << 8);
            let hi = PAIRS[v >> 12];
            let lo = PAIRS[v & 0xfff];
            dst[o..o + 4].copy_from_slice(&[hi[0], hi[1], lo[0], b'=']);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn matches_the_reference_encoder() {
        let mut seed = 0x12345678u32;
        for len in 0..300 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let mut out = b"prefix".to_vec();
            encode_into(&data, &mut out);
            let expect = base64::engine::general_purpose::STANDARD.encode(&data);
            assert_eq!(&out[6..], expect.as_bytes(), "len {len}");
        }
    }
}
