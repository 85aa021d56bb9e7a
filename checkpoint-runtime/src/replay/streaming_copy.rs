//! Copying bytes into the replay store around the CPU caches.

/// Appends `src` to `dst` with non-temporal stores where the CPU has them:
/// the kept bytes are read again only by a replay, so writing them around
/// the caches leaves the operator's own data (a counter's map) cached.
/// Streamed at hundreds of megabytes a second, they otherwise evict it
/// and the operator runs at half speed (`docs/BENCHMARKS.md`).
pub(crate) fn extend_streaming(dst: &mut Vec<u8>, src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        const LANE: usize = 16;
        if src.len() >= 4 * LANE {
            dst.reserve(src.len());
            let start = dst.len();
            let base = dst.as_mut_ptr();
            // The bytes before the first 16-byte boundary go the usual way.
            let head = (LANE - (base as usize + start) % LANE) % LANE;
            let lanes = (src.len() - head) / LANE;
            let body = lanes * LANE;
            // SAFETY: `reserve` made room for `src.len()` bytes past `start`;
            // every write below lands in `start..start + src.len()`, the
            // body's on 16-byte-aligned addresses as `_mm_stream_si128`
            // requires, and the loads read inside `src`. SSE2, which both
            // intrinsics need, is part of every x86_64 target. `set_len`
            // runs after all of it is written.
            unsafe {
                let out = base.add(start);
                std::ptr::copy_nonoverlapping(src.as_ptr(), out, head);
                for i in 0..lanes {
                    let from = src.as_ptr().add(head + i * LANE).cast::<__m128i>();
                    let to = out.add(head + i * LANE).cast::<__m128i>();
                    _mm_stream_si128(to, _mm_loadu_si128(from));
                }
                let tail = src.len() - head - body;
                std::ptr::copy_nonoverlapping(src.as_ptr().add(head + body), out.add(head + body), tail);
                // Orders the streamed stores before whatever publishes the bytes.
                _mm_sfence();
                dst.set_len(start + src.len());
            }
            return;
        }
    }
    dst.extend_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the 64-byte threshold and the 16-byte lanes, at
    /// every alignment of the destination: the same bytes as a plain copy.
    #[test]
    fn appends_exactly_the_source_at_any_alignment() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for prefix in 0..17 {
            for len in [0, 1, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 255, 300] {
                let mut dst: Vec<u8> = (0..prefix).map(|i| i as u8 ^ 0xa5).collect();
                let mut expected = dst.clone();
                expected.extend_from_slice(&src[..len]);
                extend_streaming(&mut dst, &src[..len]);
                assert_eq!(dst, expected, "prefix {prefix}, length {len}");
            }
        }
    }
}
