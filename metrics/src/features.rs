//! [`Features`]: one feature vector per image, validated once so the estimators need not.
//!
//! Values are stored as f64 although networks emit f32: the references (pytorch-fid's
//! `np.cov`, torch-fidelity's and clean-fid's numpy code) compute in float64, widening f32
//! exactly, and the weight-free reference values are float64 data. Storing f64 keeps one
//! code path and lets tests match the references to ~1e-14.

use faer::MatRef;

use crate::error::{MetricError, Result, Set};

/// `n` feature rows of dimension `d`, row-major, all finite, `n ≥ 1`, `d ≥ 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    n: usize,
    d: usize,
    data: Vec<f64>,
}

impl Features {
    /// One row per image. Accepts `f32` or `f64` rows (`&[Vec<f32>]`, `&[[f64; 3]]`, …).
    pub fn from_rows<T, R>(rows: &[R]) -> Result<Self>
    where
        T: Copy + Into<f64>,
        R: AsRef<[T]>,
    {
        let first = rows.first().ok_or(MetricError::Empty {
            what: "the set has no rows",
        })?;
        let d = first.as_ref().len();
        let mut data = Vec::with_capacity(rows.len() * d);
        for (row, r) in rows.iter().enumerate() {
            let r = r.as_ref();
            if r.len() != d {
                return Err(MetricError::Ragged {
                    row,
                    len: r.len(),
                    expected: d,
                });
            }
            data.extend(r.iter().map(|&v| v.into()));
        }
        Self::from_vec(rows.len(), d, data)
    }

    /// `n` rows of `d` values from a row-major buffer (copied, widened to f64).
    pub fn from_flat<T: Copy + Into<f64>>(n: usize, d: usize, data: &[T]) -> Result<Self> {
        Self::from_vec(n, d, data.iter().map(|&v| v.into()).collect())
    }

    /// `n` rows of `d` values from a row-major f64 buffer, without copying.
    pub fn from_vec(n: usize, d: usize, data: Vec<f64>) -> Result<Self> {
        if n == 0 {
            return Err(MetricError::Empty {
                what: "the set has no rows",
            });
        }
        if d == 0 {
            return Err(MetricError::Empty {
                what: "the rows have no values",
            });
        }
        if data.len() != n * d {
            return Err(MetricError::Shape {
                n,
                d,
                len: data.len(),
            });
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(MetricError::NonFinite {
                row: i / d,
                col: i % d,
                value: data[i],
            });
        }
        Ok(Features { n, d, data })
    }

    /// Number of rows (images).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Dimension of each row.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// All rows, row-major.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// The rows at `indices`, in that order (repeats allowed), as a new set.
    ///
    /// # Panics
    /// If `indices` is empty or an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Features {
        assert!(!indices.is_empty(), "select needs at least one index");
        let mut data = Vec::with_capacity(indices.len() * self.d);
        for &i in indices {
            data.extend_from_slice(self.row(i));
        }
        Features {
            n: indices.len(),
            d: self.d,
            data,
        }
    }

    /// The mean row (f64 sums over fixed chunks of rows, added in order).
    pub fn mean(&self) -> Vec<f64> {
        crate::linalg::mean(self)
    }

    /// Every row divided by its Euclidean norm (CLIP and CSD embeddings are compared as unit
    /// vectors). A zero row is an error naming it.
    pub fn l2_normalised(&self) -> Result<Features> {
        let mut data = self.data.clone();
        for (row, r) in data.chunks_exact_mut(self.d).enumerate() {
            let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                return Err(MetricError::ZeroRow {
                    context: "L2 normalisation".into(),
                    row,
                });
            }
            r.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(Features { data, ..*self })
    }

    /// The rows as the columns of a column-major `d × n` matrix (no copy).
    pub(crate) fn columns(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.data, self.d, self.n)
    }
}

/// Both sets have the same dimension, else an error naming both.
pub(crate) fn same_dimension(real: &Features, generated: &Features) -> Result<usize> {
    if real.d != generated.d {
        return Err(MetricError::DimensionMismatch {
            real: real.d,
            generated: generated.d,
        });
    }
    Ok(real.d)
}

/// Both sets have at least `need` rows, else an error naming the short one.
pub(crate) fn at_least(
    metric: &'static str,
    need: usize,
    real: &Features,
    generated: &Features,
) -> Result<()> {
    for (set, f) in [(Set::Real, real), (Set::Generated, generated)] {
        if f.n < need {
            return Err(MetricError::TooFewImages {
                metric,
                need,
                got: f.n,
                set,
            });
        }
    }
    Ok(())
}
