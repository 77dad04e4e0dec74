//! An adapter on the GPU: A and B of every adapted layer, looked up by (layer, target).

use super::{Adapter, LoraTensor, Target};
use crate::error::ensure;
use crate::gpu::Arena;
use crate::ops::lora::{lora_down, lora_down_shared, LoraDims};
use crate::ops::matmul::{choose_f32_tiling, matmul_gemv_normed, matmul_with, Accumulate, ColumnBlocks, InputNorm, LowRankTerm, MatmulDims, MatmulKind, SplitParts, StackedTerm, TermLayout};
use crate::{GpuBuffer, GpuContext, Result};

pub struct GpuLora {
    pub a: GpuBuffer, // (r, in)
    pub b: GpuBuffer, // (out, r)
    pub rank: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub scale: f32,
    /// A fused layer's parts (Phi-3's q, k, v of qkv_proj): each its target and its rows of B.
    pub parts: Vec<(Target, GpuBuffer)>,
}

impl GpuLora {
    pub fn dims(&self, m: usize) -> LoraDims {
        LoraDims { m, d_in: self.d_in, d_out: self.d_out, rank: self.rank, scale: self.scale, accumulate: false, dropout: (0.0, 0) }
    }

    /// The dims of part `target`'s rows of a fused layer.
    pub fn part_dims(&self, m: usize, rows: usize) -> LoraDims {
        LoraDims { d_out: rows, ..self.dims(m) }
    }
}

/// How a base layer is adapted: by its own tensor, or as part `part` of a fused one
/// (`first`: it computes x·Aᵀ; `last`: its backward finishes dA and dx).
#[derive(Clone, Copy, Debug)]
pub struct LoraUse {
    pub index: usize,
    pub part: Option<FusedPart>,
    /// The tensor whose seed draws the dropout mask on the layer's input: the first adapted
    /// of the targets that read the same input (q, k, v; gate, up), which share one mask as
    /// the parts of a fused layer do, so that one launch can compute all their x·Aᵀ.
    pub seed_index: usize,
    /// Where one launch computes x·Aᵀ of this target with the others that read its input.
    pub shared: Option<SharedUse>,
}

#[derive(Clone, Copy, Debug)]
pub struct FusedPart {
    pub index: usize,
    pub rows: usize,
    pub first: bool,
    pub last: bool,
}

/// A target's place in its input's [`SharedA`]: its x·Aᵀ is output `slot` of the group's
/// launch, which the group's first target (slot 0) records.
#[derive(Clone, Copy, Debug)]
pub struct SharedUse {
    pub group: usize,
    pub slot: usize,
}

/// The A's of a layer's targets that read one input (q, k, v; gate, up), of one rank and
/// back to back in the adapter's buffer: one (count·r, in) matrix whose product with the input
/// is one launch (ops::lora::lora_down_shared).
pub struct SharedA {
    pub a: GpuBuffer,
    /// The targets' tensors, in target order (the order the block projects them).
    pub members: Vec<usize>,
    /// Their B's as one (Σ out, r) matrix, where they too lie back to back and the targets
    /// share a scale: the term of the layer's stacked weights ([`GpuAdapter::stacked`]).
    pub b: Option<GpuBuffer>,
}

/// How a layer's targets that read one input (q, k, v; gate, up) are projected in one launch
/// through their stacked weight, for chunks of tokens (`GpuAdapter::stacking`).
#[derive(Clone, Copy)]
pub enum Stacking<'a> {
    /// No adapter changes them: the base weight alone.
    Plain,
    /// One input group adapts them alike (their B's stacked, one scale): its LoRA as the
    /// launch's term (`GpuAdapter::stacked_term`).
    Adapted(StackedGroup<'a>),
    /// Otherwise: one launch each.
    Apart,
}

impl Stacking<'_> {
    pub fn stacks(self) -> bool {
        !matches!(self, Stacking::Apart)
    }
}

/// The input group that adapts a layer's stacked targets: all of them, or all but the middle
/// one or the last of three (k of PEFT's default q_proj, v_proj; v of q_proj, k_proj), whose
/// outputs then take no term.
#[derive(Clone, Copy)]
pub struct StackedGroup<'a> {
    pub group: &'a SharedA,
    /// Its first tensor's use.
    pub first: LoraUse,
    /// Whether the middle target is left alone.
    pub skips_middle: bool,
}

/// An adapter's targets over a layer's stacked weights (q, k and v as one matmul; gate and
/// up), for the matrix-vector launches of decoding: their x·Aᵀ as one product over their A's
/// into `h` side by side, then h·Bᵀ as the stacked launch's term.
#[derive(Clone, Copy)]
pub struct StackedLora<'a> {
    /// (count·r, in)
    pub a: &'a GpuBuffer,
    /// (Σ out, r)
    pub b: &'a GpuBuffer,
    /// Scratch of at least m·count·r floats.
    pub h: &'a GpuBuffer,
    pub count: usize,
    pub rank: usize,
    pub d_in: usize,
    pub scale: f32,
    /// The stacked rows where the second adapted target's and the third's start (usize::MAX:
    /// none), and those of a target it leaves alone (first row, rows; [0, 0]: none).
    pub starts: [usize; 2],
    pub skipped: [usize; 2],
}

impl<'a> StackedLora<'a> {
    /// Records h = x·Aᵀ of the targets for `m` rows of `x` (normed as they are read where
    /// `norm` says: the stacked launch norms them too) and returns their term.
    pub fn down(self, ctx: &GpuContext, x: &GpuBuffer, m: usize, norm: Option<InputNorm>) -> Result<LowRankTerm<'a>> {
        let width = self.count * self.rank;
        let d = MatmulDims::new(m, width, self.d_in);
        match norm {
            Some(norm) => matmul_gemv_normed(ctx, self.h, x, self.a, d, norm, None)?,
            // (f32 where the context asks for f16 matmuls, as LoRA's products are: ops::lora)
            None => matmul_with(ctx, MatmulKind::Forward, choose_f32_tiling(ctx, MatmulKind::Forward, &d), self.h, x, self.a, d, Accumulate::OVERWRITE)?,
        }
        let layout = TermLayout::Stacked(StackedTerm { h_row: width, h_part: self.rank, starts: self.starts, skipped: self.skipped });
        Ok(LowRankTerm { h: self.h, v: self.b, rank: self.rank, scale: self.scale, dropout: (0.0, 0), layout })
    }
}

/// Where the adapter's A and B lie in its arenas (its weights, their gradients, the
/// optimizer's moments): layer by layer, and within a layer the A's of the targets that read
/// one input back to back, then their B's, so that those A's are one matrix. Reads and writes
/// of whole arenas go through [`LoraLayout::canonical`] and [`LoraLayout::arena_order`], so
/// what leaves the GPU (downloads, checkpoints' moments) keeps the adapter's tensor order:
/// A then B of each tensor.
pub struct LoraLayout {
    /// The f32 count of each part, in arena order.
    pub sizes: Vec<usize>,
    /// Per tensor (adapter order): the arena part of its A and of its B.
    pub a: Vec<usize>,
    pub b: Vec<usize>,
    /// Per tensor: the first tensor of its input group (see [`LoraUse::seed_index`]).
    pub seed_index: Vec<usize>,
    /// The input groups of two tensors or more, each in target order.
    pub groups: Vec<Vec<usize>>,
    /// Per layer: the range of arena parts that holds its tensors.
    pub layers: Vec<std::ops::Range<usize>>,
}

impl LoraLayout {
    pub fn new(adapter: &Adapter, n_layers: usize) -> Self {
        let t = &adapter.tensors;
        let mut order: Vec<usize> = (0..t.len()).collect();
        // the fused target stands for the input: q, k, v read qkv's, gate and up gate_up's
        order.sort_by_key(|&i| (t[i].layer, t[i].target.fused() as usize, t[i].target as usize));
        let n = t.len();
        let (mut a, mut b, mut seed_index) = (vec![0; n], vec![0; n], vec![0; n]);
        let (mut sizes, mut groups) = (Vec::with_capacity(2 * n), Vec::new());
        let mut layers: Vec<std::ops::Range<usize>> = vec![0..0; n_layers];
        for run in order.chunk_by(|&x, &y| (t[x].layer, t[x].target.fused()) == (t[y].layer, t[y].target.fused())) {
            let start = sizes.len();
            for &i in run {
                (a[i], seed_index[i]) = (sizes.len(), run[0]);
                sizes.push(t[i].rank * t[i].d_in);
            }
            for &i in run {
                b[i] = sizes.len();
                sizes.push(t[i].d_out * t[i].rank);
            }
            if run.len() > 1 {
                groups.push(run.to_vec());
            }
            // the layer's runs follow one another: its range grows from its first run's start
            let layer = &mut layers[t[run[0]].layer];
            *layer = if layer.end == 0 { start..sizes.len() } else { layer.start..sizes.len() };
        }
        LoraLayout { sizes, a, b, seed_index, groups, layers }
    }

    /// The arena part of each of A and B in the adapter's order (A then B of each tensor).
    pub fn arena_order(&self) -> Vec<usize> {
        self.a.iter().zip(&self.b).flat_map(|(&a, &b)| [a, b]).collect()
    }

    /// An arena's parts (read in arena order) in the adapter's order.
    pub fn canonical(&self, mut parts: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        self.arena_order().into_iter().map(|p| std::mem::take(&mut parts[p])).collect()
    }
}

/// Part `i` of arena tensor `tensor`'s B (or dB) rows for each part of a fused `target`.
pub(crate) fn fused_part_views(ctx: &GpuContext, arena: &Arena, b_part: usize, target: Target, rank: usize, cfg: &crate::model::Config) -> Result<Vec<(Target, GpuBuffer)>> {
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    target
        .parts()
        .iter()
        .map(|&p| {
            let rows = p.rows_in(target, cfg);
            let what = format!("the LoRA rows of {} in {}", p.name(), target.name());
            Ok((p, arena.sub_view(b_part, (rows.start * rank * 4) as u64, (rows.len() * rank * 4) as u64, align, &what)?))
        })
        .collect()
}

pub struct GpuAdapter {
    pub adapter: Adapter,
    /// Same order as `adapter.tensors`; their A and B are views of `params`.
    pub tensors: Vec<GpuLora>,
    /// Every tensor's A and B in one buffer, as `layout` places them: AdamW updates them in
    /// one launch and a download is one readback.
    pub params: Arena,
    pub layout: LoraLayout,
    /// The input groups whose x·Aᵀ one launch computes (on the GPU kernels, where their A's
    /// lie back to back and share a rank).
    pub shared: Vec<SharedA>,
    /// by_layer[layer][target as index] → index into `tensors`.
    by_layer: Vec<[Option<usize>; Target::COUNT]>,
    /// Per tensor: its group in `shared` and its slot there.
    shared_of: Vec<Option<SharedUse>>,
}

impl GpuAdapter {
    pub fn upload(ctx: &GpuContext, adapter: Adapter, cfg: &crate::model::Config) -> Result<Self> {
        let layout = LoraLayout::new(&adapter, cfg.n_layers);
        let params = ctx.alloc_arena(&layout.sizes)?;
        let mut by_layer = vec![[None; Target::COUNT]; cfg.n_layers];
        let mut tensors = Vec::with_capacity(adapter.tensors.len());
        for (i, t) in adapter.tensors.iter().enumerate() {
            by_layer[t.layer][t.target as usize] = Some(i);
            let (a, b) = (params.view(layout.a[i]), params.view(layout.b[i]));
            ctx.write_f32(&a, &t.a);
            ctx.write_f32(&b, &t.b);
            let parts = if t.target.is_fused() { fused_part_views(ctx, &params, layout.b[i], t.target, t.rank, cfg)? } else { Vec::new() };
            tensors.push(GpuLora { a, b, rank: t.rank, d_in: t.d_in, d_out: t.d_out, scale: t.scale, parts });
        }
        let mut shared_of = vec![None; tensors.len()];
        let shared: Vec<SharedA> = layout
            .groups
            .iter()
            .filter(|g| ctx.kernel_paths() == crate::gpu::KernelPaths::Gpu && back_to_back(&tensors, g))
            .enumerate()
            .map(|(group, members)| {
                for (slot, &i) in members.iter().enumerate() {
                    shared_of[i] = Some(SharedUse { group, slot });
                }
                let span = |of: &dyn Fn(&GpuLora) -> &GpuBuffer| {
                    let (first, last) = (of(&tensors[members[0]]), of(&tensors[*members.last().expect("two or more")]));
                    GpuBuffer::view(&params.whole, first.offset() - params.whole.offset(), last.offset() + last.len_bytes() - first.offset())
                };
                let b_stacked = members.windows(2).all(|w| {
                    let (x, y) = (&tensors[w[0]], &tensors[w[1]]);
                    x.b.offset() + x.b.len_bytes() == y.b.offset() && x.scale == y.scale
                });
                SharedA { a: span(&|t| &t.a), members: members.clone(), b: b_stacked.then(|| span(&|t| &t.b)) }
            })
            .collect();
        Ok(GpuAdapter { adapter, tensors, params, layout, shared, by_layer, shared_of })
    }

    pub fn index(&self, layer: usize, target: Target) -> Option<usize> {
        self.by_layer[layer][target as usize]
    }

    /// How base layer `target` of `layer` is adapted, if at all: its own tensor, or its part
    /// of a fused one.
    pub fn lora_use(&self, layer: usize, target: Target) -> Option<LoraUse> {
        if let Some(index) = self.index(layer, target) {
            return Some(LoraUse { index, part: None, seed_index: self.layout.seed_index[index], shared: self.shared_of[index] });
        }
        let fused = target.fused();
        let index = self.index(layer, fused).filter(|_| fused != target)?;
        let parts = fused.parts();
        let p = parts.iter().position(|&t| t == target).expect("a part of its fused layer");
        let rows = self.tensors[index].parts[p].1.len_words() / self.tensors[index].rank;
        let part = Some(FusedPart { index: p, rows, first: p == 0, last: p + 1 == parts.len() });
        Some(LoraUse { index, part, seed_index: index, shared: None })
    }

    pub fn get(&self, layer: usize, target: Target) -> Option<&GpuLora> {
        self.index(layer, target).map(|i| &self.tensors[i])
    }

    /// The input group that holds exactly the tensors of `uses` (two or more, in target
    /// order), where one does.
    pub fn group_of(&self, uses: &[LoraUse]) -> Option<&SharedA> {
        let first = uses.first().filter(|_| uses.len() > 1)?;
        first.shared.map(|s| &self.shared[s.group]).filter(|g| g.members.iter().eq(uses.iter().map(|u| &u.index)))
    }

    /// How this adapter adapts `targets` of `layer`, which read one input (q, k, v; gate, up),
    /// for one launch through their stacked weight.
    pub fn stacking(&self, layer: usize, targets: &[Target]) -> Stacking<'_> {
        let adapted: Vec<Option<LoraUse>> = targets.iter().map(|&t| self.lora_use(layer, t)).collect();
        let uses: Vec<LoraUse> = adapted.iter().flatten().copied().collect();
        // all of them, or two of three, the first among them
        let stackable = uses.len() == targets.len() || (uses.len() == 2 && targets.len() == 3 && adapted[0].is_some());
        match self.group_of(&uses) {
            _ if uses.is_empty() => Stacking::Plain,
            Some(group) if stackable && group.b.is_some() => Stacking::Adapted(StackedGroup { group, first: uses[0], skips_middle: adapted[1].is_none() }),
            _ => Stacking::Apart,
        }
    }

    /// Records x·Aᵀ of the targets that group `s` adapts alike from `x` into their parts of `h`
    /// (`h_part` of each tensor), and gives their LoRA as the term of their stacked launch:
    /// x·Aᵀ in blocks of `h_view` (h's parts of the group as one binding, from the first's; an
    /// empty block for a middle target left alone), their B's stacked (V block-diagonal).
    #[allow(clippy::too_many_arguments)]
    pub fn stacked_term<'a>(&'a self, ctx: &GpuContext, s: StackedGroup<'a>, x: &GpuBuffer, h: &Arena, h_part: &dyn Fn(usize) -> usize, h_view: &'a GpuBuffer, d: LoraDims) -> Result<LowRankTerm<'a>> {
        self.lora_down(ctx, s.first, x, h, h_part, d)?;
        let members = &s.group.members;
        let at = |m: usize| h.views[h_part(m)].offset();
        let mut blocks: Vec<(usize, usize)> = members.iter().map(|&m| (((at(m) - at(members[0])) / 4) as usize, d.rank)).collect();
        if s.skips_middle {
            blocks.insert(1, (0, 0));
        }
        let v = s.group.b.as_ref().expect("stacked B's");
        Ok(LowRankTerm { h: h_view, v, rank: members.len() * d.rank, scale: d.scale, dropout: (0.0, 0), layout: TermLayout::Blocks(ColumnBlocks::new(&blocks)?) })
    }

    /// Target `i`'s slot in its input's launch (0 where none).
    pub fn shared_slot(&self, i: usize) -> usize {
        self.shared_of[i].map_or(0, |s| s.slot)
    }

    /// Records x·Aᵀ (with the dropout `d` gives) for the target `u` tells of, where it falls to
    /// it: its own; at a fused layer's first part, the parts'; at the first of the targets
    /// that share an input, theirs, in one launch. Each goes to part `h_part(tensor)` of `h`.
    pub fn lora_down(&self, ctx: &GpuContext, u: LoraUse, x: &GpuBuffer, h: &Arena, h_part: &dyn Fn(usize) -> usize, d: LoraDims) -> Result<()> {
        match (u.shared, u.part) {
            (Some(s), _) if s.slot > 0 => Ok(()),
            (Some(s), _) => {
                let group = &self.shared[s.group];
                let parts: Vec<usize> = group.members.iter().map(|&i| h_part(i)).collect();
                lora_down_shared(ctx, equally_spaced(h, &parts)?, x, &group.a, parts.len(), d)
            }
            (None, Some(p)) if !p.first => Ok(()),
            (None, _) => lora_down(ctx, &h.views[h_part(u.index)], x, &self.tensors[u.index].a, d),
        }
    }

    /// The adapter over layer `layer`'s stacked `targets` (q, k, v; gate, up; `widths` their
    /// outputs), where one [`SharedA`] with their B's back to back adapts them as
    /// [`Stacking::Adapted`] says; `h` is the scratch for their x·Aᵀ.
    pub fn stacked<'a>(&'a self, layer: usize, targets: &[Target], widths: &[usize], h: &'a GpuBuffer) -> Option<StackedLora<'a>> {
        let Stacking::Adapted(s) = self.stacking(layer, targets) else { return None };
        let (mut starts, mut skipped, mut row, mut parts) = ([usize::MAX; 2], [0; 2], 0, 0);
        for (&t, &width) in targets.iter().zip(widths) {
            match self.index(layer, t) {
                Some(_) if parts > 0 => (starts[parts - 1], parts) = (row, parts + 1),
                Some(_) => parts = 1,
                None => skipped = [row, width],
            }
            row += width;
        }
        let first = &self.tensors[s.first.index];
        Some(StackedLora { a: &s.group.a, b: s.group.b.as_ref()?, h, count: parts, rank: first.rank, d_in: first.d_in, scale: first.scale, starts, skipped })
    }

    /// The largest rank (scratch buffers are sized by it).
    pub fn max_rank(&self) -> usize {
        self.tensors.iter().map(|t| t.rank).max().unwrap_or(0)
    }

    /// Copies the GPU's A and B back into the host adapter and returns it.
    pub async fn download(&mut self, ctx: &GpuContext) -> Result<&Adapter> {
        let mut parts = self.layout.canonical(self.params.read_parts(ctx).await?).into_iter();
        for t in &mut self.adapter.tensors {
            let LoraTensor { a, b, .. } = t;
            (*a, *b) = (parts.next().expect("A"), parts.next().expect("B"));
        }
        Ok(&self.adapter)
    }
}

/// Parts `parts` of `h` as one launch's outputs: they must be equally spaced.
fn equally_spaced<'a>(h: &'a Arena, parts: &[usize]) -> Result<SplitParts<'a>> {
    let at = |i: usize| h.views[parts[i]].offset() - h.whole.offset();
    let stride = at(1) - at(0);
    ensure((2..parts.len()).all(|i| at(i) == at(0) + i as u64 * stride), || format!("x·Aᵀ of the targets that share an input: parts {parts:?} of the scratch are not equally spaced"))?;
    Ok(SplitParts { parts: &h.whole, at: at(0), stride: (stride / 4) as usize, splits: 1 })
}

/// Whether the A's of `members` (an input group, in arena order) share a rank and lie back to
/// back in their buffer, so that they are one matrix.
fn back_to_back(tensors: &[GpuLora], members: &[usize]) -> bool {
    let first = &tensors[members[0]];
    members.windows(2).all(|w| {
        let (x, y) = (&tensors[w[0]], &tensors[w[1]]);
        y.rank == first.rank && y.d_in == first.d_in && x.a.offset() + x.a.len_bytes() == y.a.offset()
    })
}
