//! Lowering a batch of messages into the guest in one pass.
//!
//! `handler(list<message>)` copies every message into the guest's memory:
//! the canonical ABI allocates each string and list of it with a call of the
//! guest's `realloc`, one per part, which no host can avoid. wasmtime's
//! generic lowering of a `list<message>` (the derived `Lower` of
//! [`MessageRef`]) adds to each of those calls a walk of the record's type
//! and a fresh look-up of the guest's memory for every field it writes:
//! about fifteen look-ups per message, which cost as much as the copying.
//!
//! [`Batch`] lowers the same list with the same `realloc` calls, in the same
//! order, into the same layout, but writes each message's record and its
//! metadata pairs with one look-up of memory after that message's
//! allocations. The record layout is the canonical ABI's for the world's
//! `message`, fixed by the specification: its size and alignment are
//! checked at compile time against what wasmtime derives for
//! [`MessageRef`], and every field's place end to end by the world test
//! `a_batch_reaches_the_guest_field_for_field`.
//!
//! Where the guest asked for strings in another encoding than UTF-8 (its
//! canonical options say so), the batch is lowered by wasmtime's generic
//! path instead.
//!
//! This implements wasmtime's `Lower` trait, whose methods are wasmtime's
//! own (hidden from its documentation, as for the code its derive writes):
//! wasmtime is pinned to one version, and a new version must keep the world
//! and conformance tests green through this path.

use std::mem::MaybeUninit;

use wasmtime::ValRaw;
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

use crate::handler::MessageRef;

/// The canonical ABI's layout of the world's `message` record in a 32-bit
/// memory: each field's offset, and the record's size and alignment.
mod layout {
    /// `topic: string` (pointer, length).
    pub const TOPIC: usize = 0;
    /// `content-type: option<string>` (case byte, then pointer, length).
    pub const CONTENT_TYPE: usize = 8;
    /// `reply-to: option<string>`.
    pub const REPLY_TO: usize = 20;
    /// `data: list<u8>` (pointer, length).
    pub const DATA: usize = 32;
    /// `metadata: option<list<tuple<string, string>>>`.
    pub const METADATA: usize = 40;
    /// The record's size.
    pub const SIZE: usize = 52;
    /// One metadata pair: key (pointer, length), value (pointer, length).
    pub const PAIR: usize = 16;
    /// The alignment of the record, a pair, and either list of them.
    pub const ALIGN: u32 = 4;
}

// The layout above is the one wasmtime derives for the record.
const _: () = assert!(<MessageRef<'static> as ComponentType>::SIZE32 == layout::SIZE);
const _: () = assert!(<MessageRef<'static> as ComponentType>::ALIGN32 == layout::ALIGN);
const _: () = assert!(<(&'static str, &'static str) as ComponentType>::SIZE32 == layout::PAIR);

/// A batch of messages as the `list<message>` argument of `handler`,
/// lowered in one pass (see the [module](self)).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a, 'm>(pub &'a [MessageRef<'m>]);

// SAFETY: a `list<message>` is a pointer and a length, as for any slice;
// the type check is the slice's own.
unsafe impl ComponentType for Batch<'_, '_> {
    type Lower = [ValRaw; 2];

    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[MessageRef<'static>] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: writes only memory that the guest's `realloc` returned for it
// (bounds-checked by `LowerContext::realloc`), in the canonical layout.
unsafe impl Lower for Batch<'_, '_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<[ValRaw; 2]>,
    ) -> wasmtime::Result<()> {
        if !utf8(cx) {
            return self.0.linear_lower_to_flat(cx, ty, dst);
        }
        let list = self.store(cx)?;
        dst.write([ValRaw::i64(list.ptr as i64), ValRaw::i64(list.len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        if !utf8(cx) {
            return self.0.linear_lower_to_memory(cx, ty, offset);
        }
        let list = self.store(cx)?.bytes()?;
        cx.get::<8>(offset).copy_from_slice(&list);
        Ok(())
    }
}

/// Whether the guest takes strings as UTF-8, as they are held here.
fn utf8<T>(cx: &LowerContext<'_, T>) -> bool {
    matches!(cx.options().string_encoding, StringEncoding::Utf8)
}

/// A guest address or length as the 32-bit value the ABI stores.
fn u32(n: usize) -> wasmtime::Result<u32> {
    u32::try_from(n).map_err(|_| wasmtime::format_err!("{n} does not fit a 32-bit memory"))
}

/// Where a list or a string went in guest memory: its address and its
/// length (in elements).
#[derive(Clone, Copy)]
struct Placed {
    ptr: usize,
    len: usize,
}

impl Placed {
    /// The (pointer, length) pair as the ABI stores it.
    fn bytes(self) -> wasmtime::Result<[u8; 8]> {
        let mut out = [0; 8];
        out[..4].copy_from_slice(&u32(self.ptr)?.to_le_bytes());
        out[4..].copy_from_slice(&u32(self.len)?.to_le_bytes());
        Ok(out)
    }
}

/// Allocates `bytes.len()` bytes in the guest (alignment 1, as for a string
/// or a `list<u8>`); copied by the caller once the message's allocations are
/// done.
fn alloc<T>(cx: &mut LowerContext<'_, T>, bytes: &[u8]) -> wasmtime::Result<Placed> {
    if bytes.len() > i32::MAX as usize {
        wasmtime::bail!("{} bytes are too many to copy into the guest", bytes.len());
    }
    let ptr = cx.realloc(0, 0, 1, bytes.len())?;
    Ok(Placed {
        ptr,
        len: bytes.len(),
    })
}

impl Batch<'_, '_> {
    /// Allocates and writes the whole list; returns where it went.
    fn store<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<Placed> {
        let messages = self.0;
        let size = messages
            .len()
            .checked_mul(layout::SIZE)
            .ok_or_else(|| wasmtime::format_err!("size overflow copying a list"))?;
        let base = cx.realloc(0, 0, layout::ALIGN, size)?;
        // The parts of one message: copied, with its record, after its last
        // allocation (an allocation may move the memory, never what is in it).
        let mut pairs: Vec<(Placed, Placed)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let topic = alloc(cx, m.topic.as_bytes())?;
            let content_type = m
                .content_type
                .map(|s| alloc(cx, s.as_bytes()))
                .transpose()?;
            let reply_to = m.reply_to.map(|s| alloc(cx, s.as_bytes())).transpose()?;
            let data = alloc(cx, m.data)?;
            pairs.clear();
            let metadata = match m.metadata {
                None => None,
                Some(list) => {
                    let bytes = list
                        .len()
                        .checked_mul(layout::PAIR)
                        .ok_or_else(|| wasmtime::format_err!("size overflow copying a list"))?;
                    let ptr = cx.realloc(0, 0, layout::ALIGN, bytes)?;
                    for (k, v) in list {
                        pairs.push((alloc(cx, k.as_bytes())?, alloc(cx, v.as_bytes())?));
                    }
                    Some(Placed {
                        ptr,
                        len: list.len(),
                    })
                }
            };

            let memory = cx.as_slice_mut();
            put(memory, topic, m.topic.as_bytes());
            if let (Some(at), Some(s)) = (content_type, m.content_type) {
                put(memory, at, s.as_bytes());
            }
            if let (Some(at), Some(s)) = (reply_to, m.reply_to) {
                put(memory, at, s.as_bytes());
            }
            put(memory, data, m.data);
            if let (Some(list), Some(at)) = (m.metadata, metadata) {
                let slots =
                    memory[at.ptr..][..at.len * layout::PAIR].chunks_exact_mut(layout::PAIR);
                for ((key, value), slot) in pairs.iter().zip(slots) {
                    slot[..8].copy_from_slice(&key.bytes()?);
                    slot[8..].copy_from_slice(&value.bytes()?);
                }
                for ((k, v), (key, value)) in list.iter().zip(&pairs) {
                    put(memory, *key, k.as_bytes());
                    put(memory, *value, v.as_bytes());
                }
            }
            let record = &mut memory[base + i * layout::SIZE..][..layout::SIZE];
            record.fill(0);
            record[layout::TOPIC..][..8].copy_from_slice(&topic.bytes()?);
            option(&mut record[layout::CONTENT_TYPE..][..12], content_type)?;
            option(&mut record[layout::REPLY_TO..][..12], reply_to)?;
            record[layout::DATA..][..8].copy_from_slice(&data.bytes()?);
            option(&mut record[layout::METADATA..][..12], metadata)?;
        }
        Ok(Placed {
            ptr: base,
            len: messages.len(),
        })
    }
}

/// Copies `bytes` to where they were allocated.
fn put(memory: &mut [u8], at: Placed, bytes: &[u8]) {
    memory[at.ptr..][..at.len].copy_from_slice(bytes);
}

/// Writes an `option` of a pointer pair: case byte, then (at offset 4) the
/// pair when it is `some`.
fn option(slot: &mut [u8], value: Option<Placed>) -> wasmtime::Result<()> {
    if let Some(at) = value {
        slot[0] = 1;
        slot[4..12].copy_from_slice(&at.bytes()?);
    }
    Ok(())
}
