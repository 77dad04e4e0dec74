//! A low-rank product added to a forward or an input gradient in the base product's own
//! launch: LoRA's scale·h·Bᵀ and dh·A, over one target or stacked weights' parts.

use super::{choose_tiling, launch, matmul_dropout, Accumulate, ColumnBlocks, DropOn, MatmulDims, MatmulKind, MatmulTiling, OperandDropout};
use crate::error::ensure;
use crate::ops::check_len;
use crate::{Error, GpuBuffer, GpuContext, Result};

/// A low-rank product added to a forward or an input-gradient matmul: LoRA's `scale·h·Bᵀ`
/// (Forward: `h` (M, rank), `v` = B (N, rank)) or `dh·A` (BackwardInput: `h` = dh (M, rank),
/// `v` = A (rank, K)).
#[derive(Clone, Copy)]
pub struct LowRankTerm<'a> {
    pub h: &'a GpuBuffer,
    pub v: &'a GpuBuffer,
    pub rank: usize,
    pub scale: f32,
    /// Dropout on the term's product alone, at each output's flat index (LoRA's mask on its
    /// part of dx): (p, seed); p 0 for none.
    pub dropout: (f32, u32),
    /// How H is laid out.
    pub layout: TermLayout,
}

/// The layout of a low-rank term's H.
#[derive(Clone, Copy, Debug)]
pub enum TermLayout {
    /// One row-major (M, rank) matrix.
    Rows,
    /// A forward's term over stacked weights (the matrix-vector kernels only).
    Stacked(StackedTerm),
    /// A term over stacked weights (the tiled kernels only), each part's H a block along the
    /// rank: an input gradient's parts' dh against their A's back to back in V; a forward's
    /// parts' x·Aᵀ (one rank) against their B's stacked by rows in V, each output block taking
    /// its own (V block-diagonal; the output in as many blocks: `MatmulDims::c_blocks`).
    Blocks(ColumnBlocks),
}

/// The term of stacked weights' product (q, k and v as one matmul, each adapted target with
/// its LoRA; V: their B's back to back): the adapted targets' h lie side by side in H,
/// `h_part` floats apart, each row `h_row` floats long; output rows from `starts[0]` on take
/// the second's, from `starts[1]` on the third's (usize::MAX: none); the `skipped[1]` rows from
/// `skipped[0]` on (a target the adapter leaves alone: k of q_proj, v_proj) take none, and V
/// holds no rows for them ([0, 0]: none).
#[derive(Clone, Copy, Debug)]
pub struct StackedTerm {
    pub h_row: usize,
    pub h_part: usize,
    pub starts: [usize; 2],
    pub skipped: [usize; 2],
}

impl LowRankTerm<'_> {
    /// The matrix-vector kernels' (term_h_row, term_h_part, term_start1, term_start2,
    /// term_skip_at, term_skip).
    pub(crate) fn gemv_layout(&self) -> [u32; 6] {
        match self.layout {
            TermLayout::Stacked(s) => {
                let [start1, start2] = s.starts.map(|x| x.min(u32::MAX as usize) as u32);
                [s.h_row as u32, s.h_part as u32, start1, start2, s.skipped[0] as u32, s.skipped[1] as u32]
            }
            _ => [self.rank as u32, 0, u32::MAX, u32::MAX, 0, 0],
        }
    }

    /// The tiled kernels' h_blocks params.
    pub(crate) fn block_params(&self) -> [u32; 4] {
        ColumnBlocks::params(match self.layout {
            TermLayout::Blocks(b) => Some(b),
            _ => None,
        })
    }

    /// Whether a launch of `kernel` (tiled: the workgroup-tiled kernels; gemv: the
    /// matrix-vector ones) reads this term's layout.
    pub(crate) fn layout_fits(&self, tiled: bool, gemv: bool) -> bool {
        match self.layout {
            TermLayout::Rows => true,
            TermLayout::Stacked(_) => gemv,
            TermLayout::Blocks(_) => tiled,
        }
    }

    /// The term as a product of its own, in `kind`'s layout, into `m` rows of `width` columns.
    fn dims(&self, kind: MatmulKind, m: usize, width: usize) -> MatmulDims {
        match kind {
            MatmulKind::BackwardInput => MatmulDims::new(m, self.rank, width),
            _ => MatmulDims::new(m, width, self.rank),
        }
    }

    /// V's strides (term_v_sj, term_v_sr) for a `kind` product into `width` columns: B (width,
    /// rank) for a forward (a blocked forward's B's: one block's rank wide), A (rank, width)
    /// for an input gradient.
    pub(crate) fn v_strides(&self, kind: MatmulKind, width: usize) -> (u32, u32) {
        match (kind, self.layout) {
            (MatmulKind::Forward, TermLayout::Blocks(b)) => (b.uniform_width().unwrap_or(self.rank) as u32, 1),
            (MatmulKind::Forward, _) => (self.rank as u32, 1),
            _ => (1, width as u32),
        }
    }

    /// out(m, width) += alpha·scale·term as a launch of its own, for a `kind` product (the
    /// kernels that cannot add it to their product).
    pub fn add_alone(&self, ctx: &GpuContext, kind: MatmulKind, out: &GpuBuffer, m: usize, width: usize, alpha: f32) -> Result<()> {
        let dims = self.dims(kind, m, width);
        let acc = Accumulate { alpha: alpha * self.scale, beta: 1.0 };
        matmul_dropout(ctx, kind, out, self.h, self.v, dims, acc, self.operand_dropout(DropOn::Out))
    }

    /// Checks the term against a `kind` product of `m` rows into `width` columns.
    pub(crate) fn check(&self, op: &str, kind: MatmulKind, m: usize, width: usize) -> Result<()> {
        ensure(kind != MatmulKind::BackwardWeight, || format!("{op}: a low-rank term is added to a forward or an input gradient, not to {kind:?}"))?;
        ensure(self.rank > 0, || format!("{op}: the low-rank term has rank 0"))?;
        ensure((0.0..1.0).contains(&self.dropout.0), || {
            format!("{op}: the low-rank term's dropout probability {} is outside [0, 1)", self.dropout.0)
        })?;
        let (h_len, v_len, _) = kind.operand_lens(&self.dims(kind, m, width));
        match self.layout {
            TermLayout::Stacked(s) => {
                let parts = 1 + s.starts.iter().filter(|&&x| x < width).count();
                ensure(kind == MatmulKind::Forward && self.dropout.0 == 0.0 && s.h_row >= self.rank, || format!("{op}: a term over stacked weights is a forward's, without dropout, its rows no shorter than its rank ({s:?})"))?;
                ensure(s.skipped[0] + s.skipped[1] <= width, || format!("{op}: a term over stacked weights skips rows {:?} past its {width}", s.skipped))?;
                check_len(op, "the low-rank term's h", self.h, (parts - 1) * s.h_part + (m - 1) * s.h_row + self.rank)?;
                return check_len(op, "the low-rank term's v", self.v, (width - s.skipped[1]) * self.rank);
            }
            TermLayout::Blocks(b) => {
                b.check(op, "the low-rank term's h", self.h, m, self.rank)?;
                if kind == MatmulKind::Forward {
                    // the parts' B's stacked by rows, one block's rank wide: checked against
                    // the output's blocks (check_out_blocks)
                    b.uniform_width().ok_or_else(|| Error::Shape(format!("{op}: a forward's term in blocks of unequal ranks ({b:?})")))?;
                    ensure(self.dropout.0 == 0.0, || format!("{op}: a forward's term in blocks has no dropout of its own"))?;
                    return Ok(());
                }
                ensure(b.blocks[..b.count()].iter().all(|&(_, w)| w > 0), || format!("{op}: an input gradient's term in blocks with an empty one ({b:?})"))?;
            }
            TermLayout::Rows => check_len(op, "the low-rank term's h", self.h, h_len)?,
        }
        check_len(op, "the low-rank term's v", self.v, v_len)
    }

    /// Checks that a forward's term is in blocks where its output (`out_blocks`) is: each
    /// output block takes its own part's term (V block-diagonal: the parts' B's stacked by
    /// rows), where the term has a block for it that is not empty; as many blocks, or one
    /// fewer (the last part without a term).
    pub(crate) fn check_out_blocks(&self, op: &str, kind: MatmulKind, out_blocks: Option<ColumnBlocks>) -> Result<()> {
        if kind != MatmulKind::Forward {
            return Ok(());
        }
        let (term, out) = match (self.layout, out_blocks) {
            (TermLayout::Blocks(t), Some(o)) if t.count() <= o.count() => (t, o),
            (TermLayout::Blocks(_), None) | (_, Some(_)) => {
                return Err(Error::Shape(format!(
                    "{op}: a forward's term in blocks needs the output in as many blocks or one more, and an output in blocks a term in blocks; got the term's {:?}, the output's {out_blocks:?}",
                    self.layout
                )))
            }
            _ => return Ok(()),
        };
        // V: the B's of the output blocks whose term block is not empty
        let rows: usize = out.blocks.iter().zip(term.blocks).filter(|(_, (_, w))| *w > 0).map(|(&(_, cols), _)| cols).sum();
        let r = term.uniform_width().expect("checked by check");
        check_len(op, "the low-rank term's v", self.v, rows * r)
    }

    /// Its dropout, as the mask on `on`.
    fn operand_dropout(&self, on: DropOn) -> OperandDropout {
        OperandDropout { on, p: self.dropout.0, seed: self.dropout.1 }
    }
}

/// `out = beta·out + alpha·(product + scale·term)` for a Forward or BackwardInput product of
/// one matrix: the tiled kernels add the term after their reduction, in the same launch
/// (matmul_tiled_low_rank.wgsl), and so does the matrix-vector kernel (a forward's term,
/// without dropout); the others launch it as a second product.
#[allow(clippy::too_many_arguments)]
pub fn matmul_low_rank(
    ctx: &GpuContext,
    kind: MatmulKind,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    d: MatmulDims,
    acc: Accumulate,
    term: LowRankTerm,
) -> Result<()> {
    let tiling = choose_tiling(ctx, kind, &d);
    matmul_low_rank_with(ctx, kind, tiling, out, a, b, d, acc, term)
}

/// [`matmul_low_rank`] with the tiling given.
#[allow(clippy::too_many_arguments)]
pub fn matmul_low_rank_with(
    ctx: &GpuContext,
    kind: MatmulKind,
    tiling: MatmulTiling,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    d: MatmulDims,
    acc: Accumulate,
    term: LowRankTerm,
) -> Result<()> {
    let op = kind.entry();
    ensure(d.batch == 1, || format!("{op}: a low-rank term is added to a product of one matrix, got {d:?}"))?;
    term.check(op, kind, d.m, kind.out_shape(&d).1)?;
    // (the kernels that cannot add the term add it alone, which reads H as rows)
    ensure(term.layout_fits(tiling.is_strided_gemm(), tiling == MatmulTiling::Gemv), || format!("{op}: {tiling:?} cannot read a term laid out as {:?}", term.layout))?;
    let masked = term.dropout.0 > 0.0;
    if tiling.is_strided_gemm() || (tiling == MatmulTiling::Gemv && !masked) {
        let drop = masked.then(|| term.operand_dropout(DropOn::Term));
        return launch(ctx, kind, tiling, out, a, b, d, acc, drop, Some(term), None);
    }
    launch(ctx, kind, tiling, out, a, b, d, acc, None, None, None)?;
    term.add_alone(ctx, kind, out, d.m, kind.out_shape(&d).1, acc.alpha)
}
