//! How a window's chunks are cut into segments scanned in parallel: one rule for the
//! CPU and CUDA backends, so that both combine the same segments (and a CPU-only build
//! has it without the CUDA plan).

/// (chunks per segment, segments) of a window of `nc` chunks asked for `segments`
/// segments with room for `g_cap`: no segment is empty, so a request that does not
/// divide `nc` can give fewer segments than asked.
pub(crate) fn segment_split(nc: usize, segments: usize, g_cap: usize) -> (usize, usize) {
    if nc == 0 {
        return (0, 0);
    }
    let g = segments.clamp(1, nc).min(g_cap.max(1));
    let per_seg = nc.div_ceil(g);
    (per_seg, nc.div_ceil(per_seg))
}
