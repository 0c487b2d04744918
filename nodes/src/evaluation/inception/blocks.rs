//! The five mixed-block types of Inception v3 (torchvision's `InceptionA`–`InceptionE`;
//! pytorch-fid's `FIDInceptionA/C/E_1/E_2` differ only in their pooling branch, see
//! [`PoolKind`]). The 1×1 convolutions that read a block's input, and the pool branch's
//! where its pool is an average, run as one matrix product ([`Head`]).

use candle_core::{Device, Tensor};

use super::layers::{
    chain, max_pool_3x3_s2, ConvBn, Fused1x1, Head, LoadResult, Loader, PoolKind, Result,
};
use super::TensorSource;

/// Mixed_5b–5d (`InceptionA`): 35×35.
pub(crate) struct BlockA {
    head: Head,
    b5_2: ConvBn,
    dbl: [ConvBn; 2],
}

impl BlockA {
    pub(crate) fn load(
        src: &dyn TensorSource,
        prefix: &str,
        cin: usize,
        pool_features: usize,
        kind: PoolKind,
        device: &Device,
    ) -> LoadResult<BlockA> {
        let l = Loader {
            src,
            prefix,
            device,
        };
        let b1 = l.conv1("branch1x1", cin, 64)?;
        let b5_1 = l.conv1("branch5x5_1", cin, 48)?;
        let b5_2 = l.conv("branch5x5_2", (48, 64), (5, 5), 1, (2, 2))?;
        let dbl_1 = l.conv1("branch3x3dbl_1", cin, 64)?;
        let dbl = [
            l.conv3("branch3x3dbl_2", 64, 96, 1, 1)?,
            l.conv3("branch3x3dbl_3", 96, 96, 1, 1)?,
        ];
        let pool = l.conv1("branch_pool", cin, pool_features)?;
        let head = Head::new(&l, &[&b1, &b5_1, &dbl_1], pool, kind)?;
        Ok(BlockA { head, b5_2, dbl })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (p, bp) = self.head.forward(x)?;
        let b5 = self.b5_2.forward(&p[1])?;
        let b3 = chain(&p[2], &self.dbl)?;
        Tensor::cat(&[&p[0], &b5, &b3, &bp], 0)
    }
}

/// Mixed_6a (`InceptionB`): 35×35 → 17×17.
pub(crate) struct BlockB {
    b3: ConvBn,
    dbl: [ConvBn; 3],
}

impl BlockB {
    pub(crate) fn load(
        src: &dyn TensorSource,
        prefix: &str,
        cin: usize,
        device: &Device,
    ) -> LoadResult<BlockB> {
        let l = Loader {
            src,
            prefix,
            device,
        };
        Ok(BlockB {
            b3: l.conv3("branch3x3", cin, 384, 2, 0)?,
            dbl: [
                l.conv1("branch3x3dbl_1", cin, 64)?,
                l.conv3("branch3x3dbl_2", 64, 96, 1, 1)?,
                l.conv3("branch3x3dbl_3", 96, 96, 2, 0)?,
            ],
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.b3.forward(x)?;
        let dbl = chain(x, &self.dbl)?;
        let pool = max_pool_3x3_s2(x)?;
        Tensor::cat(&[b3, dbl, pool], 0)
    }
}

/// Mixed_6b–6e (`InceptionC`): 17×17 with factorised 7×7 convolutions.
pub(crate) struct BlockC {
    head: Head,
    b7: [ConvBn; 2],
    dbl: [ConvBn; 4],
}

impl BlockC {
    pub(crate) fn load(
        src: &dyn TensorSource,
        prefix: &str,
        cin: usize,
        c7: usize,
        kind: PoolKind,
        device: &Device,
    ) -> LoadResult<BlockC> {
        let l = Loader {
            src,
            prefix,
            device,
        };
        let row = |name: &str, cin, cout| l.conv(name, (cin, cout), (1, 7), 1, (0, 3));
        let col = |name: &str, cin, cout| l.conv(name, (cin, cout), (7, 1), 1, (3, 0));
        let b1 = l.conv1("branch1x1", cin, 192)?;
        let b7_1 = l.conv1("branch7x7_1", cin, c7)?;
        let b7 = [row("branch7x7_2", c7, c7)?, col("branch7x7_3", c7, 192)?];
        let dbl_1 = l.conv1("branch7x7dbl_1", cin, c7)?;
        let dbl = [
            col("branch7x7dbl_2", c7, c7)?,
            row("branch7x7dbl_3", c7, c7)?,
            col("branch7x7dbl_4", c7, c7)?,
            row("branch7x7dbl_5", c7, 192)?,
        ];
        let pool = l.conv1("branch_pool", cin, 192)?;
        let head = Head::new(&l, &[&b1, &b7_1, &dbl_1], pool, kind)?;
        Ok(BlockC { head, b7, dbl })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (p, bp) = self.head.forward(x)?;
        let b7 = chain(&p[1], &self.b7)?;
        let dbl = chain(&p[2], &self.dbl)?;
        Tensor::cat(&[&p[0], &b7, &dbl, &bp], 0)
    }
}

/// Mixed_7a (`InceptionD`): 17×17 → 8×8.
pub(crate) struct BlockD {
    fused: Fused1x1,
    b3_2: ConvBn,
    b7: [ConvBn; 3],
}

impl BlockD {
    pub(crate) fn load(
        src: &dyn TensorSource,
        prefix: &str,
        cin: usize,
        device: &Device,
    ) -> LoadResult<BlockD> {
        let l = Loader {
            src,
            prefix,
            device,
        };
        let b3_1 = l.conv1("branch3x3_1", cin, 192)?;
        let b3_2 = l.conv3("branch3x3_2", 192, 320, 2, 0)?;
        let b7_1 = l.conv1("branch7x7x3_1", cin, 192)?;
        let b7 = [
            l.conv("branch7x7x3_2", (192, 192), (1, 7), 1, (0, 3))?,
            l.conv("branch7x7x3_3", (192, 192), (7, 1), 1, (3, 0))?,
            l.conv3("branch7x7x3_4", 192, 192, 2, 0)?,
        ];
        let fused = Fused1x1::new(src, &[&b3_1, &b7_1], false)?;
        Ok(BlockD { fused, b3_2, b7 })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.fused.forward(x)?;
        let b3 = self.b3_2.forward(&p[0])?;
        let b7 = chain(&p[1], &self.b7)?;
        let pool = max_pool_3x3_s2(x)?;
        Tensor::cat(&[b3, b7, pool], 0)
    }
}

/// Mixed_7b–7c (`InceptionE`): 8×8 with split 1×3 / 3×1 branches.
pub(crate) struct BlockE {
    head: Head,
    b3_2: [ConvBn; 2],
    dbl_2: ConvBn,
    dbl_3: [ConvBn; 2],
}

impl BlockE {
    pub(crate) fn load(
        src: &dyn TensorSource,
        prefix: &str,
        cin: usize,
        kind: PoolKind,
        device: &Device,
    ) -> LoadResult<BlockE> {
        let l = Loader {
            src,
            prefix,
            device,
        };
        let row = |name: &str| l.conv(name, (384, 384), (1, 3), 1, (0, 1));
        let col = |name: &str| l.conv(name, (384, 384), (3, 1), 1, (1, 0));
        let b1 = l.conv1("branch1x1", cin, 320)?;
        let b3_1 = l.conv1("branch3x3_1", cin, 384)?;
        let b3_2 = [row("branch3x3_2a")?, col("branch3x3_2b")?];
        let dbl_1 = l.conv1("branch3x3dbl_1", cin, 448)?;
        let dbl_2 = l.conv3("branch3x3dbl_2", 448, 384, 1, 1)?;
        let dbl_3 = [row("branch3x3dbl_3a")?, col("branch3x3dbl_3b")?];
        let pool = l.conv1("branch_pool", cin, 192)?;
        let head = Head::new(&l, &[&b1, &b3_1, &dbl_1], pool, kind)?;
        Ok(BlockE {
            head,
            b3_2,
            dbl_2,
            dbl_3,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (p, bp) = self.head.forward(x)?;
        let (a, b) = (self.b3_2[0].forward(&p[1])?, self.b3_2[1].forward(&p[1])?);
        let t = self.dbl_2.forward(&p[2])?;
        let (c, d) = (self.dbl_3[0].forward(&t)?, self.dbl_3[1].forward(&t)?);
        Tensor::cat(&[&p[0], &a, &b, &c, &d, &bp], 0)
    }
}
