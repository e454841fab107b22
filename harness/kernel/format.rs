//! The ggml block formats these kernels read, byte for byte as candle stores them: 32
//! weights per block, an f16 scale `d`, for some an f16 minimum `m`, and packed quants.
//! A weight is `d × (q − offset)` for the offset formats and `d × q + m` for the others.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::activations::BLOCK;

/// A 32-element block format with a kernel here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Format {
    /// d, 16 bytes of nibbles; w = d(q − 8).
    Q4_0,
    /// d, m, 16 bytes of nibbles; w = d·q + m.
    Q4_1,
    /// d, 32 high bits, 16 bytes of nibbles; w = d(q − 16).
    Q5_0,
    /// d, m, 32 high bits, 16 bytes of nibbles; w = d·q + m.
    Q5_1,
    /// d, 32 signed bytes; w = d·q.
    Q8_0,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Q4_0,
        Format::Q4_1,
        Format::Q5_0,
        Format::Q5_1,
        Format::Q8_0,
    ];

    /// The format of a candle dtype, when these kernels cover it.
    pub fn of(dtype: GgmlDType) -> Option<Format> {
        Some(match dtype {
            GgmlDType::Q4_0 => Format::Q4_0,
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q5_0 => Format::Q5_0,
            GgmlDType::Q5_1 => Format::Q5_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            _ => return None,
        })
    }

    /// The format whose discriminant (`format as u8`, the kernels' const parameter) is `id`.
    pub const fn from_id(id: u8) -> Format {
        match id {
            0 => Format::Q4_0,
            1 => Format::Q4_1,
            2 => Format::Q5_0,
            3 => Format::Q5_1,
            _ => Format::Q8_0,
        }
    }

    pub fn dtype(self) -> GgmlDType {
        match self {
            Format::Q4_0 => GgmlDType::Q4_0,
            Format::Q4_1 => GgmlDType::Q4_1,
            Format::Q5_0 => GgmlDType::Q5_0,
            Format::Q5_1 => GgmlDType::Q5_1,
            Format::Q8_0 => GgmlDType::Q8_0,
        }
    }

    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
            Format::Q8_0 => 34,
        }
    }

    /// One block's unsigned quants (before the offset), its scale and its minimum, read
    /// the portable way: the reference the SIMD kernels are tested against.
    pub fn decode_block(self, blk: &[u8]) -> ([u8; BLOCK], f32, f32) {
        let half = |at: usize| f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32();
        let nibbles = |qs: &[u8], q: &mut [u8; BLOCK]| {
            for j in 0..BLOCK / 2 {
                q[j] = qs[j] & 0x0F;
                q[j + BLOCK / 2] = qs[j] >> 4;
            }
        };
        let high_bits = |qh: &[u8], q: &mut [u8; BLOCK]| {
            let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
            for (j, v) in q.iter_mut().enumerate() {
                *v |= (((bits >> j) & 1) as u8) << 4;
            }
        };
        let mut q = [0u8; BLOCK];
        match self {
            Format::Q4_0 => {
                nibbles(&blk[2..18], &mut q);
                (q, half(0), 0.0)
            }
            Format::Q4_1 => {
                nibbles(&blk[4..20], &mut q);
                (q, half(0), half(2))
            }
            Format::Q5_0 => {
                nibbles(&blk[6..22], &mut q);
                high_bits(&blk[2..6], &mut q);
                (q, half(0), 0.0)
            }
            Format::Q5_1 => {
                nibbles(&blk[8..24], &mut q);
                high_bits(&blk[4..8], &mut q);
                (q, half(0), half(2))
            }
            Format::Q8_0 => {
                for (v, b) in q.iter_mut().zip(&blk[2..34]) {
                    *v = b ^ 0x80; // i8 + 128, as an unsigned byte
                }
                (q, half(0), 0.0)
            }
        }
    }

    /// What is subtracted from the unsigned quants (0 for the formats with a minimum).
    pub const fn offset(self) -> i32 {
        match self {
            Format::Q4_0 => 8,
            Format::Q5_0 => 16,
            Format::Q8_0 => 128,
            Format::Q4_1 | Format::Q5_1 => 0,
        }
    }

    /// The block's 32 weights as f32.
    pub fn dequantize_block(self, blk: &[u8]) -> [f32; BLOCK] {
        let (q, d, m) = self.decode_block(blk);
        let off = self.offset();
        q.map(|v| d * (v as i32 - off) as f32 + m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// Our reading of every format agrees with candle's own dequantization.
    #[test]
    fn decoding_agrees_with_candle() {
        let (rows, k) = (3, 64);
        let w: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021)
            .collect();
        let t = Tensor::from_vec(w, (rows, k), &Device::Cpu).unwrap();
        for f in Format::ALL {
            let q = QTensor::quantize(&t, f.dtype()).unwrap();
            let theirs = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let data = q.data().unwrap();
            assert_eq!(data.len(), rows * k / BLOCK * f.block_bytes(), "{f:?}");
            let ours: Vec<f32> = data
                .chunks(f.block_bytes())
                .flat_map(|b| f.dequantize_block(b))
                .collect();
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{f:?} [{i}]: {a} vs {b}"
                );
            }
        }
    }
}
