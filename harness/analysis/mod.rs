//! What the figures mean: [`stats`] holds every statistic (summaries, quantiles, the
//! bootstrap, mean and standard error, covariance, Student's t and Welch's interval, the
//! decode rate's one definition); [`compare`] judges runs against each other with them;
//! [`history`] gathers many runs' figures into trends. Rendering lives in `report/`.

pub mod compare;
pub mod history;
pub mod stats;
