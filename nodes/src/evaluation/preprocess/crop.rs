//! Crop rectangles and the centre-crop rules of the reference tools.
//!
//! Two tools crop "at the centre" and disagree by a pixel when the margin is odd:
//! cmmd-pytorch floors (`(h - l) // 2`), torchvision's `CenterCrop` rounds half to even
//! (`int(round((h - size) / 2.0))`). Each recipe uses the rule of its reference.

/// A rectangle of pixels: `width × height` starting at column `left`, row `top`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CropBox {
    pub left: usize,
    pub top: usize,
    pub width: usize,
    pub height: usize,
}

impl CropBox {
    /// The whole of a `width × height` image.
    pub fn full(width: usize, height: usize) -> CropBox {
        CropBox {
            left: 0,
            top: 0,
            width,
            height,
        }
    }

    /// CMMD's square crop (cmmd-pytorch `_center_crop_and_resize`, after Google's CMMD):
    /// side `l = min(w, h)`, left `(w − l) // 2`, top `(h − l) // 2`.
    pub fn center_square(width: usize, height: usize) -> CropBox {
        let side = width.min(height);
        CropBox {
            left: (width - side) / 2,
            top: (height - side) / 2,
            width: side,
            height: side,
        }
    }

    /// torchvision's `CenterCrop(size)` of a `width × height` image at least `size` on each
    /// side: offsets `int(round((w − size) / 2.0))` with Python's round-half-to-even. (An
    /// image smaller than `size`, which torchvision would pad with zeros, is not cropped on
    /// that axis; the recipes never ask for it.)
    pub fn torchvision_center(width: usize, height: usize, size: usize) -> CropBox {
        let axis = |len: usize| {
            if len <= size {
                (0, len)
            } else {
                (round_half_even_half(len - size), size)
            }
        };
        let (left, w) = axis(width);
        let (top, h) = axis(height);
        CropBox {
            left,
            top,
            width: w,
            height: h,
        }
    }

    /// Whether the box lies inside a `width × height` image.
    pub fn fits(&self, width: usize, height: usize) -> bool {
        self.left + self.width <= width && self.top + self.height <= height
    }
}

/// `round(n / 2)` with ties to even, as Python's `round` does: 1 → 0, 3 → 2, 5 → 2, 7 → 4.
fn round_half_even_half(n: usize) -> usize {
    let q = n / 2;
    if n % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_square_floors() {
        assert_eq!(
            CropBox::center_square(229, 227),
            CropBox {
                left: 1,
                top: 0,
                width: 227,
                height: 227
            }
        );
        assert_eq!(
            CropBox::center_square(4, 7),
            CropBox {
                left: 0,
                top: 1,
                width: 4,
                height: 4
            }
        );
        assert_eq!(CropBox::center_square(1, 1), CropBox::full(1, 1));
    }

    #[test]
    fn torchvision_rounds_half_to_even() {
        // Python: [int(round(m / 2.0)) for m in range(8)] == [0, 0, 1, 2, 2, 2, 3, 4]
        let lefts: Vec<usize> = (0..8)
            .map(|m| CropBox::torchvision_center(224 + m, 224, 224).left)
            .collect();
        assert_eq!(lefts, [0, 0, 1, 2, 2, 2, 3, 4]);
        assert_eq!(CropBox::torchvision_center(225, 300, 224).top, 38);
        let small = CropBox::torchvision_center(100, 300, 224);
        assert_eq!(
            (small.left, small.width, small.top, small.height),
            (0, 100, 38, 224)
        );
        assert!(small.fits(100, 300));
    }
}
