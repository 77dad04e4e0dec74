//! One list of buffers for both what is allocated and what is estimated: [`buffer_set!`]
//! declares a struct of GPU buffers together with a twin struct of their sizes, so that a
//! pass allocates from the sizes and a memory estimate adds up the same sizes.

/// Bytes the pool allocates for a buffer of `len` bytes.
pub fn pooled_bytes(len: u64) -> u64 {
    len.max(16).next_multiple_of(16)
}

/// Bytes of a scratch buffer asked for `len` bytes ([`GpuContext::alloc_scratch_f32`]): up
/// to 1 KiB the next power of two, above it rounded up to a quarter of its octave (at most
/// 25 % more, about 9 % on average), so that work whose size follows the batch reuses a
/// few pooled buffers however many lengths the batches have.
///
/// [`GpuContext::alloc_scratch_f32`]: super::GpuContext::alloc_scratch_f32
pub fn scratch_bytes(len: u64) -> u64 {
    let len = pooled_bytes(len);
    if len <= 1024 {
        return len.next_power_of_two();
    }
    let quarter = 1u64 << (63 - len.leading_zeros() - 2);
    len.next_multiple_of(quarter)
}

/// `buffer_set!(Buffers / Sizes { /// (N, C) doc, field, ... })` declares `struct Buffers`
/// (one GpuBuffer per field), `struct Sizes` (one f32 count per field) with `bytes()`, and
/// `Buffers::alloc(ctx, &sizes)`.
macro_rules! buffer_set {
    ($(#[$doc:meta])* $name:ident / $sizes:ident { $($(#[$fdoc:meta])* $field:ident,)* }) => {
        $(#[$doc])*
        pub(crate) struct $name {
            $($(#[$fdoc])* pub(crate) $field: $crate::GpuBuffer,)*
        }

        /// Element counts (f32 or u32) of each buffer of the set above.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub(crate) struct $sizes {
            $(pub(crate) $field: usize,)*
        }

        impl $sizes {
            /// What the buffer pool allocates for them.
            pub(crate) fn bytes(&self) -> u64 {
                0 $(+ $crate::gpu::layout::pooled_bytes(4 * self.$field.max(1) as u64))*
            }
        }

        impl $name {
            pub(crate) fn alloc(ctx: &$crate::GpuContext, s: &$sizes) -> $crate::Result<Self> {
                Ok($name { $($field: ctx.alloc_f32(s.$field.max(1))?,)* })
            }
        }
    };
}

pub(crate) use buffer_set;
