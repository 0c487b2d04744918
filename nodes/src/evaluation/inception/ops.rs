//! The two CPU kernels that make Inception fast in candle, with portable fallbacks.
//!
//! Activations are kept channel-major, `[C, N, H, W]` ("CNHW"), so that every convolution
//! is one large matrix product over the whole batch: `W[Cout, Cin·kh·kw] @ cols[Cin·kh·kw,
//! N·Ho·Wo]` gives the output directly in the same layout, a channel concatenation is a
//! concatenation along dim 0 (one copy of whole blocks), and a channel slice of a merged
//! product is a contiguous view. candle's `conv2d` instead re-lays out its input per call
//! (NCHW → NHWC, scalar loops), builds its im2col tiles element by element, and runs small
//! per-tile products; and bias + ReLU are two more passes.
//!
//! - [`im2col`]: the patch matrix of a `[C, N, H, W]` input for a range of images, with
//!   the zero padding written implicitly (no padded copy), rows copied as slices, in
//!   parallel over rows;
//! - [`bias_relu`]: `max(x + b, 0)` per channel, in place, in parallel over channels.
//!
//! On other devices (CUDA, Metal) the same results come from candle's own operations
//! (`conv2d` on an NCHW copy, `broadcast_add`, `relu`); `tests::fallbacks_agree` checks
//! that both routes give the same numbers.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, InplaceOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

pub(crate) type Result<T> = candle_core::Result<T>;

#[cfg(test)]
thread_local! {
    /// Tests set this to run the portable route on the CPU.
    pub(crate) static FORCE_PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether `t` goes through the CPU kernels of this module (else candle's operations).
pub(crate) fn cpu_kernels(t: &Tensor) -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.with(|f| f.get()) {
        return false;
    }
    t.device().is_cpu()
}

/// A convolution's geometry: kernel, stride, padding (rows, columns).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub kernel: (usize, usize),
    pub stride: usize,
    pub pad: (usize, usize),
}

impl Geometry {
    pub(crate) fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.pad.0 - self.kernel.0) / self.stride + 1,
            (w + 2 * self.pad.1 - self.kernel.1) / self.stride + 1,
        )
    }
}

/// The patch matrix `[C·kh·kw, (n1−n0)·Ho·Wo]` of images `n0..n1` of `x` (`[C, N, H, W]`,
/// f32, on the CPU): row `c·kh·kw + i·kw + j`, column `(n·Ho + y)·Wo + x` holds
/// `x[c, n, y·s + i − ph, x·s + j − pw]` (0 outside the image), matching a PyTorch weight
/// `[Cout, C, kh, kw]` flattened to `[Cout, C·kh·kw]`.
pub(crate) fn im2col(x: &Tensor, g: Geometry, images: std::ops::Range<usize>) -> Result<Tensor> {
    x.apply_op1_no_bwd(&Im2col { g, images })
}

struct Im2col {
    g: Geometry,
    images: std::ops::Range<usize>,
}

impl CustomOp1 for Im2col {
    fn name(&self) -> &'static str {
        "inception-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(src) = storage else {
            candle_core::bail!("im2col: f32 input expected");
        };
        let Some((start, _)) = layout.contiguous_offsets() else {
            candle_core::bail!("im2col: contiguous input expected");
        };
        let (c, n, h, w) = layout.shape().dims4()?;
        if self.images.end > n {
            candle_core::bail!("im2col: images {:?} of {n}", self.images);
        }
        let Geometry {
            kernel: (kh, kw),
            stride: s,
            pad: (ph, pw),
        } = self.g;
        let (ho, wo) = self.g.out_size(h, w);
        let nc = self.images.len();
        let row_len = nc * ho * wo;
        let src = &src[start..start + c * n * h * w];
        let total = c * kh * kw * row_len;
        let zero = MaybeUninit::new(0f32);
        let mut out: Vec<f32> = Vec::with_capacity(total);
        // Every element is written exactly once below (no zero-filling pass first).
        out.spare_capacity_mut()[..total]
            .par_chunks_mut(row_len.max(1))
            .enumerate()
            .for_each(|(r, row)| {
                let (ci, i, j) = (r / (kh * kw), (r / kw) % kh, r % kw);
                // Output columns whose input column x·s + j − pw lies inside the image.
                let x_lo = (pw.saturating_sub(j)).div_ceil(s).min(wo);
                let x_hi = if w + pw > j {
                    ((w + pw - j - 1) / s + 1).min(wo)
                } else {
                    0
                }
                .max(x_lo);
                for (k, img) in self.images.clone().enumerate() {
                    let plane = &src[(ci * n + img) * h * w..][..h * w];
                    for y in 0..ho {
                        let dst = &mut row[(k * ho + y) * wo..][..wo];
                        let sy = (y * s + i) as isize - ph as isize;
                        if sy < 0 || sy >= h as isize {
                            dst.fill(zero);
                            continue;
                        }
                        let src_row = &plane[sy as usize * w..][..w];
                        dst[..x_lo].fill(zero);
                        dst[x_hi..].fill(zero);
                        if s == 1 {
                            let a = x_lo + j - pw;
                            dst[x_lo..x_hi]
                                .copy_from_slice(as_uninit(&src_row[a..a + x_hi - x_lo]));
                        } else {
                            for (xo, d) in dst.iter_mut().enumerate().take(x_hi).skip(x_lo) {
                                d.write(src_row[xo * s + j - pw]);
                            }
                        }
                    }
                }
            });
        // SAFETY: the loop above initialised all `total` elements.
        unsafe { out.set_len(total) };
        Ok((CpuStorage::F32(out), Shape::from((c * kh * kw, row_len))))
    }
}

fn as_uninit(s: &[f32]) -> &[MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and initialised values are valid
    // `MaybeUninit`s.
    unsafe { &*(s as *const [f32] as *const [MaybeUninit<f32>]) }
}

/// `max(t + bias[c], 0)` over `t` = `[C, ...]`: in place on the CPU (t must be a contiguous
/// f32 tensor or view that nothing else reads unmodified), a new tensor elsewhere.
pub(crate) fn bias_relu(t: &Tensor, bias: &Tensor, bias_cpu: &[f32]) -> Result<Tensor> {
    if cpu_kernels(t) {
        t.inplace_op1(&BiasRelu { bias: bias_cpu })?;
        return Ok(t.clone());
    }
    let mut shape = vec![1usize; t.rank()];
    shape[0] = bias.dim(0)?;
    t.broadcast_add(&bias.reshape(shape)?)?.relu()
}

struct BiasRelu<'a> {
    bias: &'a [f32],
}

impl InplaceOp1 for BiasRelu<'_> {
    fn name(&self) -> &'static str {
        "inception-bias-relu"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("bias_relu: f32 expected");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("bias_relu: contiguous tensor expected");
        };
        let rows = layout.dims()[0];
        if rows != self.bias.len() || rows == 0 {
            candle_core::bail!("bias_relu: {rows} channels, {} biases", self.bias.len());
        }
        let row_len = (end - start) / rows;
        data[start..end]
            .par_chunks_mut(row_len.max(1))
            .zip(self.bias.par_iter())
            .for_each(|(row, &b)| {
                for v in row {
                    *v = (*v + b).max(0.0);
                }
            });
        Ok(())
    }
}

/// A 3×3 pooling of every `H×W` plane of a `[.., .., H, W]` tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pool {
    /// `max_pool2d(3, stride)`; with padding 1, padded cells never win (PyTorch pads −∞).
    Max,
    /// `avg_pool2d(3, stride, padding, count_include_pad=True)`: the sum ÷ 9.
    AvgCountPad,
    /// `avg_pool2d(.., count_include_pad=False)`: the sum ÷ the in-image cells.
    AvgInImage,
}

/// `pool` over 3×3 windows with `stride` and `pad` (0 or 1) on each plane.
pub(crate) fn pool3x3(x: &Tensor, pool: Pool, stride: usize, pad: usize) -> Result<Tensor> {
    if cpu_kernels(x) {
        return x.apply_op1_no_bwd(&Pool3x3 { pool, stride, pad });
    }
    pool3x3_portable(x, pool, stride, pad)
}

/// [`pool3x3`] from candle's operations (any device).
fn pool3x3_portable(x: &Tensor, pool: Pool, stride: usize, pad: usize) -> Result<Tensor> {
    let (c, n, h, w) = x.dims4()?;
    match pool {
        Pool::Max => {
            let ninf =
                |s: (usize, usize, usize, usize)| Tensor::full(f32::NEG_INFINITY, s, x.device());
            let (x, h) = if pad > 0 {
                let x = Tensor::cat(&[&ninf((c, n, pad, w))?, x, &ninf((c, n, pad, w))?], 2)?;
                (x, h + 2 * pad)
            } else {
                (x.clone(), h)
            };
            let x = if pad > 0 {
                Tensor::cat(&[&ninf((c, n, h, pad))?, &x, &ninf((c, n, h, pad))?], 3)?
            } else {
                x
            };
            x.max_pool2d_with_stride(3, stride)
        }
        Pool::AvgCountPad | Pool::AvgInImage => {
            let pooled = x
                .pad_with_zeros(2, pad, pad)?
                .pad_with_zeros(3, pad, pad)?
                .avg_pool2d_with_stride(3, stride)?;
            if pool == Pool::AvgCountPad || pad == 0 {
                return Ok(pooled);
            }
            let (_, _, ho, wo) = pooled.dims4()?;
            let mut scale = Vec::with_capacity(ho * wo);
            for oy in 0..ho {
                for ox in 0..wo {
                    let (rows, cols) = (window(oy, stride, pad, h), window(ox, stride, pad, w));
                    scale.push(9.0 / ((rows.end - rows.start) * (cols.end - cols.start)) as f32);
                }
            }
            pooled.broadcast_mul(&Tensor::from_vec(scale, (1, 1, ho, wo), x.device())?)
        }
    }
}

/// The in-image input rows (or columns) of output position `o`'s 3-wide window.
fn window(o: usize, stride: usize, pad: usize, size: usize) -> std::ops::Range<usize> {
    let start = (o * stride).saturating_sub(pad);
    let end = (o * stride + 3 - pad).min(size);
    start..end
}

struct Pool3x3 {
    pool: Pool,
    stride: usize,
    pad: usize,
}

impl CustomOp1 for Pool3x3 {
    fn name(&self) -> &'static str {
        "inception-pool3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(src) = storage else {
            candle_core::bail!("pool3x3: f32 input expected");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("pool3x3: contiguous input expected");
        };
        let (c, n, h, w) = layout.shape().dims4()?;
        let (s, p) = (self.stride, self.pad);
        if h + 2 * p < 3 || w + 2 * p < 3 {
            candle_core::bail!("pool3x3: {h}×{w} input is smaller than the window");
        }
        let (ho, wo) = ((h + 2 * p - 3) / s + 1, (w + 2 * p - 3) / s + 1);
        let total = c * n * ho * wo;
        let mut out: Vec<f32> = Vec::with_capacity(total);
        let cols: Vec<std::ops::Range<usize>> = (0..wo).map(|o| window(o, s, p, w)).collect();
        out.spare_capacity_mut()[..total]
            .par_chunks_mut(ho * wo)
            .zip(src[start..end].par_chunks(h * w))
            .for_each(|(dst, plane)| {
                for oy in 0..ho {
                    let rows = window(oy, s, p, h);
                    for (ox, cr) in cols.iter().enumerate() {
                        let mut acc = if self.pool == Pool::Max {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        };
                        for iy in rows.clone() {
                            let row = &plane[iy * w..][cr.clone()];
                            for &v in row {
                                acc = if self.pool == Pool::Max {
                                    acc.max(v)
                                } else {
                                    acc + v
                                };
                            }
                        }
                        dst[oy * wo + ox].write(match self.pool {
                            Pool::Max => acc,
                            Pool::AvgCountPad => acc / 9.0,
                            Pool::AvgInImage => acc / (rows.len() * cr.len()) as f32,
                        });
                    }
                }
            });
        // SAFETY: the loop above wrote every output of every plane.
        unsafe { out.set_len(total) };
        Ok((CpuStorage::F32(out), Shape::from((c, n, ho, wo))))
    }
}

/// A convolution of a `[C, N, H, W]` input by candle's `conv2d` (any device): to NCHW,
/// explicit padding for unequal row/column padding, and back.
pub(crate) fn conv_portable(x: &Tensor, w4: &Tensor, g: Geometry) -> Result<Tensor> {
    let x = x.permute((1, 0, 2, 3))?.contiguous()?;
    let (ph, pw) = g.pad;
    let y = if ph == pw {
        x.conv2d(w4, ph, g.stride, 1, 1)?
    } else {
        x.pad_with_zeros(2, ph, ph)?
            .pad_with_zeros(3, pw, pw)?
            .conv2d(w4, 0, g.stride, 1, 1)?
    };
    y.permute((1, 0, 2, 3))?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(D::Minus1)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// im2col + matmul equals candle's conv2d for every kernel shape, stride and padding
    /// Inception uses (odd sizes, image ranges), and the in-place bias + ReLU equals
    /// broadcast_add + relu.
    #[test]
    fn fallbacks_agree() {
        let dev = Device::Cpu;
        let geoms = [
            ((3, 3), 2, (0, 0)),
            ((3, 3), 1, (1, 1)),
            ((5, 5), 1, (2, 2)),
            ((1, 7), 1, (0, 3)),
            ((7, 1), 1, (3, 0)),
            ((1, 3), 1, (0, 1)),
            ((3, 1), 1, (1, 0)),
            ((3, 3), 1, (0, 0)),
            ((1, 1), 2, (0, 0)),
        ];
        let x = Tensor::randn(0f32, 1.0, (4, 3, 9, 11), &dev).unwrap();
        for (kernel, stride, pad) in geoms {
            let g = Geometry {
                kernel,
                stride,
                pad,
            };
            let w4 = Tensor::randn(0f32, 1.0, (5, 4, kernel.0, kernel.1), &dev).unwrap();
            let want = conv_portable(&x, &w4, g).unwrap();
            let (ho, wo) = g.out_size(9, 11);
            let w2 = w4.reshape((5, ())).unwrap();
            for images in [0..3, 1..3] {
                let cols = im2col(&x, g, images.clone()).unwrap();
                let got = w2
                    .matmul(&cols)
                    .unwrap()
                    .reshape((5, images.len(), ho, wo))
                    .unwrap();
                let want = want.narrow(1, images.start, images.len()).unwrap();
                let zero = want.zeros_like().unwrap();
                let rel = max_diff(&got, &want) / max_diff(&want, &zero);
                assert!(rel < 1e-6, "{g:?} {images:?}: {rel}");
            }
        }
        let t = Tensor::randn(0f32, 1.0, (6, 2, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 6, &dev).unwrap();
        let want = t
            .broadcast_add(&b.reshape((6, 1, 1, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        let rows = t.copy().unwrap();
        let view = rows.narrow(0, 2, 3).unwrap();
        let bv: Vec<f32> = b.to_vec1().unwrap();
        bias_relu(&view, &b.narrow(0, 2, 3).unwrap(), &bv[2..5]).unwrap();
        assert_eq!(
            max_diff(
                &rows.narrow(0, 2, 3).unwrap(),
                &want.narrow(0, 2, 3).unwrap()
            ),
            0.0
        );
        // rows outside the view are untouched
        assert_eq!(
            max_diff(&rows.narrow(0, 0, 2).unwrap(), &t.narrow(0, 0, 2).unwrap()),
            0.0
        );
    }

    /// The CPU pooling kernel equals candle's pools (with the padding emulated) for each
    /// kind, stride and padding Inception uses, on odd and even sizes.
    #[test]
    fn pools_agree() {
        let x = Tensor::randn(0f32, 1.0, (3, 2, 9, 8), &Device::Cpu).unwrap();
        for pool in [Pool::Max, Pool::AvgCountPad, Pool::AvgInImage] {
            for (stride, pad) in [(1, 1), (2, 0)] {
                let got = pool3x3(&x, pool, stride, pad).unwrap();
                let want = pool3x3_portable(&x, pool, stride, pad).unwrap();
                assert_eq!(got.dims(), want.dims());
                let zero = want.zeros_like().unwrap();
                let rel = max_diff(&got, &want) / max_diff(&want, &zero);
                assert!(rel < 1e-6, "{pool:?} stride {stride} pad {pad}: {rel}");
            }
        }
        // count_include_pad=False: the corner of a 3×3 window at padding 1 averages 4 cells
        let ones = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let avg = pool3x3(&ones, Pool::AvgInImage, 1, 1).unwrap();
        assert_eq!(
            avg.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0; 16]
        );
        let avg = pool3x3(&ones, Pool::AvgCountPad, 1, 1).unwrap();
        assert_eq!(
            avg.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0],
            4.0 / 9.0
        );
    }
}
