//! Linear layers and convolutions whose frozen weights get no gradient.
//!
//! candle's backward pass computes the gradient of *both* operands of every matmul and
//! convolution, even when one is a constant (`shared/docs/candle.md`: 3.66 GB of frozen-weight
//! gradients for an SD 1.5 UNet at 32×32 latents, and a weight-gradient convolution as costly
//! as the forward one). Training here differentiates only w.r.t. token rows or LoRA
//! adapters, so when a layer's input is part of a gradient graph and its weight is not, the
//! layer is computed without a graph and re-attached to its input by [`GradToInput`], whose
//! backward computes the input's gradient only, with the very calls candle's own backward
//! makes for the plain layer (`grad.matmul(&rhs.t())` behind the same reshapes,
//! `grad.conv_transpose2d(…)` with the same output padding): the gradients that matter are
//! those of the plain layer, value for value.
//!
//! Only on the CPU (the op copies its forward value there); other devices, inputs outside a
//! gradient graph (sampling), trainable weights and layouts candle would treat otherwise take
//! candle's ordinary path.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

type Result<T> = candle_core::Result<T>;

type Backward = Box<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// `value` (computed without a graph) as a node of `input`'s graph whose gradient w.r.t.
/// `input` is `backward(grad)`; `value` itself gets none.
struct GradToInput {
    backward: Backward,
}

impl CustomOp2 for GradToInput {
    fn name(&self) -> &'static str {
        "grad-to-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = l1.contiguous_offsets() else {
            candle_core::bail!("grad-to-input: the value must be contiguous");
        };
        let copy = match s1 {
            CpuStorage::F32(v) => CpuStorage::F32(v[start..end].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[start..end].to_vec()),
            CpuStorage::F16(v) => CpuStorage::F16(v[start..end].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[start..end].to_vec()),
            other => candle_core::bail!("grad-to-input: unsupported dtype {:?}", other.dtype()),
        };
        Ok((copy, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _value: &Tensor,
        _input: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, Some((self.backward)(grad)?)))
    }
}

/// Whether input `x` and weight `w` call for the frozen-weight path.
fn frozen(x: &Tensor, w: &Tensor) -> bool {
    x.track_op() && !w.track_op() && x.device().is_cpu()
}

fn attach(value: Tensor, input: &Tensor, backward: Backward) -> Result<Tensor> {
    value
        .contiguous()?
        .apply_op2(input, GradToInput { backward })
}

/// `x Wᵀ` (`x`: `[..., in]`, `w`: `[out, in]`), exactly `x.broadcast_matmul(&w.t())`.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let wt = w.t()?;
    if !(frozen(x, w) && x.is_contiguous() && x.rank() >= 2 && w.rank() == 2) {
        return x.broadcast_matmul(&wt);
    }
    let value = x.detach().broadcast_matmul(&wt)?;
    let x_dims = x.dims().to_vec();
    let backward: Backward = if x.rank() == 2 {
        // broadcast_matmul: `x.matmul(wt)`.
        Box::new(move |g| g.matmul(&wt.t()?))
    } else {
        // broadcast_matmul folds the leading dimensions: reshape, matmul, reshape.
        let n = wt.dim(1)?;
        let rows: usize = x_dims[..x_dims.len() - 1].iter().product();
        Box::new(move |g| {
            g.reshape((rows, n))?
                .matmul(&wt.t()?)?
                .reshape(x_dims.as_slice())
        })
    };
    attach(value, x, backward)
}

/// `x.conv2d(w, padding, stride, 1, 1)`.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if !frozen(x, w) {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let value = x.detach().conv2d(w, padding, stride, 1, 1)?;
    let (w, in_h) = (w.clone(), x.dim(2)?);
    let backward: Backward = Box::new(move |g| {
        // As candle's backward of Op::Conv2D (dilation 1).
        let out_size = (g.dim(2)? - 1) * stride + (w.dim(2)? - 1) + 1 - 2 * padding;
        g.conv_transpose2d(&w, padding, in_h - out_size, stride, 1)
    });
    attach(value, x, backward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(seed: u64, shape: &[usize]) -> Tensor {
        crate::diffusion::noise::gaussian(seed, shape, &Device::Cpu).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// The same values and the same input gradients as the plain layers, and no gradient
    /// for the weights.
    #[test]
    fn same_values_and_input_gradients_no_weight_gradients() {
        for (xs, ws) in [(vec![2, 5, 6], vec![3, 6]), (vec![4, 6], vec![3, 6])] {
            let x = Var::from_tensor(&rand(1, &xs)).unwrap();
            let w = rand(2, &ws);
            let h = (x.as_tensor() * 1.5).unwrap();
            let wt = w.t().unwrap();
            let plain = h.broadcast_matmul(&wt).unwrap();
            let ours = matmul_t(&h, &w).unwrap();
            assert_eq!(bits(&plain), bits(&ours));
            let up = rand(3, plain.dims());
            let gp = (plain * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(
                bits(gp.get(x.as_tensor()).unwrap()),
                bits(go.get(x.as_tensor()).unwrap())
            );
            // candle's plain matmul stores a gradient for its (frozen) right operand.
            assert!(gp.get(&wt).is_some());
        }
        for (stride, padding) in [(1, 1), (2, 1), (1, 0)] {
            let x = Var::from_tensor(&rand(4, &[2, 3, 9, 9])).unwrap();
            let w = rand(5, &[4, 3, 3, 3]);
            let h = (x.as_tensor() * 0.5).unwrap();
            let plain = h.conv2d(&w, padding, stride, 1, 1).unwrap();
            let ours = conv2d(&h, &w, padding, stride).unwrap();
            assert_eq!(bits(&plain), bits(&ours));
            let up = rand(6, plain.dims());
            let gp = (plain * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(
                bits(gp.get(x.as_tensor()).unwrap()),
                bits(go.get(x.as_tensor()).unwrap())
            );
            assert!(gp.get(&w).is_some() && go.get(&w).is_none());
        }
        // A trainable weight keeps its gradient (the plain path).
        let x = Var::from_tensor(&rand(7, &[4, 6])).unwrap();
        let w = Var::from_tensor(&rand(8, &[3, 6])).unwrap();
        let g = matmul_t(x.as_tensor(), w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(w.as_tensor()).is_some());
    }
}
