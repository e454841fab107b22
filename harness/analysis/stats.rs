//! Every statistic quantbench computes, kept apart from measuring and reporting:
//! summaries of repeated measurements (median, spread), quantiles, the bootstrap, mean
//! and standard error, covariance, Student's t and Welch's interval, and the one
//! definition of the decode rate.

use serde::{Deserialize, Serialize};

/// Median and spread of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Sample standard deviation (n - 1); 0 for a single sample.
    pub stddev: f64,
    /// Median absolute deviation from the median.
    pub mad: f64,
}

impl Summary {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let n = samples.len();
        let median = median(samples);
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let deviations: Vec<f64> = samples.iter().map(|x| (x - median).abs()).collect();
        Some(Summary {
            n,
            median,
            mean,
            min: samples.iter().cloned().fold(f64::INFINITY, f64::min),
            max: samples.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            stddev: var.sqrt(),
            mad: self::median(&deviations),
        })
    }

    /// The spread (max - min) relative to the median, in percent.
    pub fn range_percent(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median * 100.0
        }
    }
}

/// The median of `samples` (mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The two-sided critical value of Student's t with `df` degrees of freedom at
/// `confidence` (0.95 gives 2.776 for df = 4): the t with P(|T| > t) = 1 - confidence.
/// Found by bisection on the exact tail probability (a regularized incomplete beta).
pub fn student_t_critical(confidence: f64, df: f64) -> f64 {
    let alpha = (1.0 - confidence).clamp(1e-12, 1.0);
    let (mut lo, mut hi) = (0.0f64, 1e7f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_two_sided_tail(mid, df) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// P(|T| > t) for Student's t with `df` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2).
pub fn student_t_two_sided_tail(t: f64, df: f64) -> f64 {
    regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// I_x(a, b), by the continued fraction (Numerical Recipes' betacf), using the symmetry
/// I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly.
fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (1.0 - x).ln())
            .exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    // One step of the modified Lentz recurrence, with coefficient `aa`.
    let mut step = |aa: f64| -> f64 {
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        d * c
    };
    for m in 1..500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)));
        let del = step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)));
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Welch's confidence interval of the relative change between the means of two small
/// samples of positive figures, taken on their logarithms (a ratio, as run-to-run noise
/// is multiplicative): (low, high) in percent, or `None` when a side has fewer than two
/// samples or a figure is not positive.
pub fn welch_ratio_interval(base: &[f64], new: &[f64], confidence: f64) -> Option<(f64, f64)> {
    if base.len() < 2 || new.len() < 2 || base.iter().chain(new).any(|&x| x.is_nan() || x <= 0.0) {
        return None;
    }
    let logs = |xs: &[f64]| xs.iter().map(|x| x.ln()).collect::<Vec<f64>>();
    let (lb, ln) = (logs(base), logs(new));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let var =
        |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    let (mb, mn) = (mean(&lb), mean(&ln));
    let (sb, sn) = (
        var(&lb, mb) / lb.len() as f64,
        var(&ln, mn) / ln.len() as f64,
    );
    let d = mn - mb;
    let se = (sb + sn).sqrt();
    let pct = |x: f64| x.exp_m1() * 100.0;
    if se == 0.0 {
        return Some((pct(d), pct(d)));
    }
    // Welch–Satterthwaite degrees of freedom.
    let df =
        (sb + sn).powi(2) / (sb * sb / (lb.len() - 1) as f64 + sn * sn / (ln.len() - 1) as f64);
    let t = student_t_critical(confidence, df);
    Some((pct(d - t * se), pct(d + t * se)))
}

/// The value at `fraction` of sorted `values`, interpolated linearly between the two
/// nearest (llama-perplexity's `percentile`; at 0.5 the median, the mean of the middle
/// two for an even count). `None` for no values.
pub fn percentile(sorted: &[f64], fraction: f64) -> Option<f64> {
    let (first, last) = (*sorted.first()?, *sorted.last()?);
    if fraction <= 0.0 {
        return Some(first);
    }
    if fraction >= 1.0 {
        return Some(last);
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let i = p.floor() as usize;
    let w = p - i as f64;
    let next = sorted[(i + 1).min(sorted.len() - 1)];
    Some((1.0 - w) * sorted[i] + w * next)
}

/// The seeded resampler both bootstraps draw from: the same inputs always give the same
/// interval.
struct Resampler {
    rng: rand_xoshiro::Xoshiro256PlusPlus,
    buf: Vec<f64>,
}

impl Resampler {
    fn new() -> Self {
        use rand_xoshiro::rand_core::SeedableRng;
        Resampler {
            rng: rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0x5eed_c0de),
            buf: Vec::new(),
        }
    }

    /// The median of `xs.len()` draws from `xs` with replacement (`xs` not empty).
    fn median_of_draw(&mut self, xs: &[f64]) -> f64 {
        use rand_xoshiro::rand_core::RngCore;
        self.buf.clear();
        for _ in 0..xs.len() {
            let i = (self.rng.next_u64() % xs.len() as u64) as usize;
            self.buf.push(xs[i]);
        }
        median(&self.buf)
    }
}

/// The central `confidence` interval of the statistics, by rank (nearest, no
/// interpolation).
fn percentile_interval(mut stats: Vec<f64>, confidence: f64) -> (f64, f64) {
    stats.sort_by(f64::total_cmp);
    let alpha = (1.0 - confidence) / 2.0;
    let at = |q: f64| stats[((stats.len() - 1) as f64 * q).round() as usize];
    (at(alpha), at(1.0 - alpha))
}

/// Percentile bootstrap interval of the median of `samples` at `confidence` (0.95 for
/// 95%): `resamples` draws with replacement (at least 100), seeded, so the same samples
/// always give the same interval. `None` for no samples; a single sample is its own
/// interval.
pub fn bootstrap_median_ci(
    samples: &[f64],
    confidence: f64,
    resamples: usize,
) -> Option<(f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut r = Resampler::new();
    let medians = (0..resamples.max(100))
        .map(|_| r.median_of_draw(samples))
        .collect();
    Some(percentile_interval(medians, confidence))
}

/// Percentile bootstrap interval of the relative change in medians from `base` to
/// `new`, percent, at `confidence` over `resamples` draws (at least 100). Seeded, so the
/// same inputs always give the same interval. Both sides must hold samples.
pub fn bootstrap_change_ci(
    base: &[f64],
    new: &[f64],
    confidence: f64,
    resamples: usize,
) -> (f64, f64) {
    let mut r = Resampler::new();
    let changes = (0..resamples.max(100))
        .map(|_| {
            let b = r.median_of_draw(base);
            let n = r.median_of_draw(new);
            if b != 0.0 {
                (n - b) / b * 100.0
            } else {
                0.0
            }
        })
        .collect();
    percentile_interval(changes, confidence)
}

/// Mean and its standard error sqrt((mean of squares - mean²) / (n - 1)), as
/// llama-perplexity's `mean_and_uncertainty` (which reports 0 for 10 values or fewer;
/// here the error is computed from 2 values on).
pub fn mean_and_stderr(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| x * x).sum::<f64>() / n as f64 - mean * mean;
    let se = if n > 1 && var > 0.0 {
        (var / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    (mean, se)
}

/// The covariance of two means (llama-perplexity's `covariance`): (mean of a·b -
/// mean a · mean b) / (n - 1).
pub fn covariance(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let ma = a[..n].iter().sum::<f64>() / n as f64;
    let mb = b[..n].iter().sum::<f64>() / n as f64;
    let mab = a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / n as f64;
    (mab - ma * mb) / (n - 1) as f64
}

/// Decode tokens per second of one generation from its decode steps' times (the steps
/// after the prefill): their count over their total time. `None` without decode steps
/// (one new token) or without measurable time. The one definition of the figure: the
/// runner's summary, `compare` and `generate` all call it.
pub fn decode_tokens_per_second(decode_step_seconds: &[f64]) -> Option<f64> {
    let total: f64 = decode_step_seconds.iter().sum();
    (!decode_step_seconds.is_empty() && total > 0.0 && total.is_finite())
        .then(|| decode_step_seconds.len() as f64 / total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.median, 2.5);
        assert_eq!(s.mean, 4.0);
        assert_eq!((s.min, s.max), (1.0, 10.0));
        assert!((s.stddev - 4.0825).abs() < 1e-4);
        assert_eq!(s.mad, 1.0); // deviations 0.5, 1.5, 0.5, 7.5
        assert_eq!(Summary::of(&[5.0]).unwrap().stddev, 0.0);
        assert!(Summary::of(&[]).is_none());
        assert_eq!(
            Summary::of(&[2.0, 3.0, 4.0]).unwrap().range_percent(),
            2.0 / 3.0 * 100.0
        );
    }

    #[test]
    fn student_t_critical_values_match_the_tables() {
        // Two-sided 95% and 99% from any statistics table.
        for (df, t95, t99) in [
            (1.0, 12.706, 63.657),
            (2.0, 4.303, 9.925),
            (3.0, 3.182, 5.841),
            (4.0, 2.776, 4.604),
            (8.0, 2.306, 3.355),
            (30.0, 2.042, 2.750),
            (1000.0, 1.962, 2.581),
        ] {
            assert!((student_t_critical(0.95, df) - t95).abs() < 2e-3, "df {df}");
            assert!((student_t_critical(0.99, df) - t99).abs() < 2e-3, "df {df}");
        }
    }

    #[test]
    fn welch_intervals_widen_with_few_samples_and_centre_on_the_ratio() {
        let (lo, hi) = welch_ratio_interval(&[1.0, 1.1, 0.9], &[1.2, 1.32, 1.08], 0.95).unwrap();
        assert!(lo < 20.0 && hi > 20.0, "{lo} {hi}");
        let (lo2, hi2) = welch_ratio_interval(
            &[1.0, 1.1, 0.9, 1.0, 1.1, 0.9],
            &[1.2, 1.32, 1.08, 1.2, 1.32, 1.08],
            0.95,
        )
        .unwrap();
        assert!(hi2 - lo2 < hi - lo, "more runs, a narrower interval");
        assert_eq!(welch_ratio_interval(&[1.0], &[2.0, 2.0], 0.95), None);
        assert_eq!(welch_ratio_interval(&[1.0, 0.0], &[2.0, 2.0], 0.95), None);
        let (lo, hi) = welch_ratio_interval(&[2.0, 2.0], &[3.0, 3.0], 0.95).unwrap();
        assert!((lo - 50.0).abs() < 1e-9 && (hi - 50.0).abs() < 1e-9);
    }
}
