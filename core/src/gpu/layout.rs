//! One list of buffers for both what is allocated and what is estimated: [`buffer_set!`]
//! declares a struct of GPU buffers together with a twin struct of their sizes, so that a
//! pass allocates from the sizes and a memory estimate adds up the same sizes.

/// Bytes the pool allocates for a buffer of `len` bytes.
pub fn pooled_bytes(len: u64) -> u64 {
    len.max(16).next_multiple_of(16)
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
