//! Weights on 2 MB pages — an experiment, off by default (`QUANTBENCH_HUGE_PAGES=1`
//! turns it on).
//!
//! A decode step streams every weight once. On 4 KB pages that is a page walk per 4 KB
//! and hardware prefetchers that stop at each page boundary; llama.cpp, which maps the
//! GGUF file, gets the page cache's large folios (2 MB mappings where the file system
//! keeps them). quantbench's weights live in anonymous memory that Linux backs with 2 MB
//! pages only when asked (`transparent_hugepage = madvise`, the common default). When
//! on, each weight buffer's 2 MB-aligned interior is marked `MADV_HUGEPAGE` after
//! loading and collapsed at once (`MADV_COLLAPSE`, Linux 6.1+: every page copied into
//! huge pages in place; same bytes, same resident size), and the record says how many
//! bytes moved (`weights.huge_page_bytes`).
//!
//! Why off: on the 2-vCPU EPYC VM of #16 the collapse added about 1.5 s of load per
//! 600 MB (copying), and the decode gain did not stand out from the noise: GPT-2 small
//! F32, 4 runs per side of 5 repetitions, +4.2% (95% CI [−6.7%, +16.5%]). (A first
//! comparison of one run per side read +21%; `quantbench compare` warned that one run
//! per side does not see the noise between processes, and it was right.) Advising the
//! buffers through the allocator before they are written avoids the copy, but puts
//! every large allocation — KV caches included — on 2 MB pages, which changes what the
//! memory readings mean; not done.

/// The environment variable that turns it on (`1`).
pub const ENV: &str = "QUANTBENCH_HUGE_PAGES";

const HUGE: usize = 2 << 20;

/// Parse a value of [`ENV`]; the error names the valid values.
pub fn parse(value: &str) -> Result<bool, String> {
    match value.trim() {
        "" | "0" => Ok(false),
        "1" => Ok(true),
        other => Err(format!(
            "{ENV}={other:?} is not a choice: use \"1\" (weights on 2 MB pages) or \"0\" (off, the default)"
        )),
    }
}

/// Whether weights are to be moved onto huge pages in this process (`ENV=1`; an invalid
/// value is rejected by the CLI before anything runs, and means off here).
pub fn enabled() -> bool {
    std::env::var(ENV).is_ok_and(|v| parse(&v) == Ok(true))
}

/// Move the 2 MB-aligned interior of `bytes` onto huge pages; returns how many bytes now
/// sit on them (0 where the kernel refused, the buffer is smaller than a huge page, or
/// this is not Linux).
pub fn back_with_huge_pages(bytes: &[u8]) -> usize {
    let start = (bytes.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (bytes.as_ptr() as usize + bytes.len()) / HUGE * HUGE;
    if end <= start {
        return 0;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the range lies inside `bytes`, memory this process owns and keeps
        // mapped; both advices leave its contents unchanged.
        unsafe {
            let p = start as *mut libc::c_void;
            if libc::madvise(p, end - start, libc::MADV_HUGEPAGE) != 0 {
                return 0;
            }
            if libc::madvise(p, end - start, 25 /* MADV_COLLAPSE */) != 0 {
                return 0;
            }
        }
        end - start
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_parses_and_names_the_valid_values() {
        assert_eq!(parse("1"), Ok(true));
        assert_eq!((parse(" 0 "), parse("")), (Ok(false), Ok(false)));
        let err = parse("yes").unwrap_err();
        assert!(
            err.contains("yes") && err.contains(ENV) && err.contains("\"1\""),
            "{err}"
        );
    }

    /// Contents survive the move, whatever the kernel decides; small buffers are left.
    #[test]
    fn moving_keeps_the_bytes() {
        let v: Vec<u8> = (0..(6 << 20))
            .map(|i: usize| (i * 31 % 251) as u8)
            .collect();
        let moved = back_with_huge_pages(&v);
        assert!(moved <= v.len() && moved.is_multiple_of(HUGE), "{moved}");
        assert!(v
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i * 31 % 251) as u8));
        assert_eq!(back_with_huge_pages(&v[..4096]), 0);
    }
}
