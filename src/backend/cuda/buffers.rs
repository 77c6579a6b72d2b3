//! Device buffers with guard bytes on both sides, so a kernel that writes past its
//! output is caught instead of silently corrupting a neighbour.

use std::sync::Arc;

use cudarc::driver::{result, CudaSlice, CudaStream, DevicePtr, PinnedHostSlice};

use super::cuda_err;
use crate::error::{Error, Result};

/// Bytes of guard before and after every buffer (keeps the data 256-byte aligned).
const GUARD: usize = 256;
const GUARD_BYTE: u8 = 0xA5;

pub(crate) struct DeviceBuffer {
    name: &'static str,
    raw: CudaSlice<u8>,
    bytes: usize,
}

impl DeviceBuffer {
    pub fn new(stream: &Arc<CudaStream>, name: &'static str, bytes: usize) -> Result<Self> {
        let mut raw = stream
            .alloc_zeros::<u8>(bytes + 2 * GUARD)
            .map_err(|e| Error::cuda(format!("allocating {name} ({bytes} bytes)"), e))?;
        let pattern = [GUARD_BYTE; GUARD];
        for start in [0, GUARD + bytes] {
            stream
                .memcpy_htod(&pattern, &mut raw.slice_mut(start..start + GUARD))
                .map_err(cuda_err("writing guard bytes"))?;
        }
        Ok(DeviceBuffer { name, raw, bytes })
    }

    /// Data bytes (without the guards).
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Device address of the first data byte, for kernel parameter blocks.
    pub fn ptr(&self, stream: &Arc<CudaStream>) -> u64 {
        let (base, _sync) = self.raw.device_ptr(stream);
        base + GUARD as u64
    }

    /// Copies `src` to data bytes `offset..offset + src.len()`.
    pub fn upload(&mut self, stream: &Arc<CudaStream>, offset: usize, src: &[u8]) -> Result<()> {
        self.check_range(offset, src.len())?;
        let start = GUARD + offset;
        stream
            .memcpy_htod(src, &mut self.raw.slice_mut(start..start + src.len()))
            .map_err(cuda_err(&format!("copy to {}", self.name)))
    }

    /// Copies all of a pinned host buffer to data bytes `0..src.len()`, asynchronously
    /// on `stream` (the host may go on; cudarc makes the next host access to `src`
    /// wait for the copy).
    pub fn upload_pinned(
        &mut self,
        stream: &Arc<CudaStream>,
        src: &PinnedHostSlice<u8>,
    ) -> Result<()> {
        self.check_range(0, src.len())?;
        stream
            .memcpy_htod(src, &mut self.raw.slice_mut(GUARD..GUARD + src.len()))
            .map_err(cuda_err(&format!("copy to {}", self.name)))
    }

    /// Copies `len` data bytes of `src` from `src_offset` to `offset` of this buffer,
    /// on the device, in stream order.
    pub fn copy_from(
        &mut self,
        stream: &Arc<CudaStream>,
        offset: usize,
        src: &DeviceBuffer,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.check_range(offset, len)?;
        src.check_range(src_offset, len)?;
        let from = src.raw.slice(GUARD + src_offset..GUARD + src_offset + len);
        stream
            .memcpy_dtod(
                &from,
                &mut self.raw.slice_mut(GUARD + offset..GUARD + offset + len),
            )
            .map_err(cuda_err(&format!(
                "copy from {} to {}",
                src.name, self.name
            )))
    }

    /// Copies data bytes `offset..offset + dst.len()` into `dst`.
    pub fn download(&self, stream: &Arc<CudaStream>, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check_range(offset, dst.len())?;
        let start = GUARD + offset;
        stream
            .memcpy_dtoh(&self.raw.slice(start..start + dst.len()), dst)
            .map_err(cuda_err(&format!("copy from {}", self.name)))?;
        // The host reads `dst` next: make sure the copy (and the kernels before it,
        // whose failures surface here) are done.
        stream
            .synchronize()
            .map_err(cuda_err(&format!("copy from {}", self.name)))
    }

    /// Sets every data byte to `byte` (0xFF makes every f32 a NaN: poison).
    pub fn fill(&mut self, stream: &Arc<CudaStream>, byte: u8) -> Result<()> {
        if self.bytes == 0 {
            return Ok(());
        }
        let ptr = self.ptr(stream);
        // SAFETY: `ptr..ptr + bytes` is this buffer's data region, alive for the call,
        // and the stream orders the memset with every other use of it.
        unsafe { result::memset_d8_async(ptr, byte, self.bytes, stream.cu_stream()) }
            .map_err(cuda_err(&format!("filling {}", self.name)))
    }

    /// Fails, naming the buffer, if a kernel wrote into its guard bytes.
    pub fn check_guards(&self, stream: &Arc<CudaStream>) -> Result<()> {
        let mut guard = [0u8; GUARD];
        for (side, start) in [("before", 0), ("after", GUARD + self.bytes)] {
            stream
                .memcpy_dtoh(&self.raw.slice(start..start + GUARD), &mut guard)
                .map_err(cuda_err("reading guard bytes"))?;
            stream
                .synchronize()
                .map_err(cuda_err("reading guard bytes"))?;
            if let Some(i) = guard.iter().position(|&b| b != GUARD_BYTE) {
                return Err(Error::Cuda {
                    op: format!("checking {}", self.name),
                    detail: format!(
                        "a kernel wrote into the guard bytes {side} the buffer (byte {i} of {GUARD})"
                    ),
                    source: None,
                });
            }
        }
        Ok(())
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        if offset + len > self.bytes {
            return Err(Error::Cuda {
                op: format!("copy with {}", self.name),
                detail: format!(
                    "bytes {offset}..{} are outside its {} bytes",
                    offset + len,
                    self.bytes
                ),
                source: None,
            });
        }
        Ok(())
    }
}
