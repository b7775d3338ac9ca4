//! What a person sees: one line per change carried out, problems on stderr, progress
//! bars for long transfers when stderr is a terminal, and nothing but problems in quiet
//! mode.

use std::fmt::Display;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Transfers at least this large get a progress bar.
const BAR_FROM: u64 = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct Reporter {
    quiet: bool,
    bars: Option<MultiProgress>,
}

impl Reporter {
    pub fn new(quiet: bool) -> Self {
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { quiet, bars }
    }

    /// A line about what happened (not in quiet mode).
    pub fn line(&self, text: impl Display) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text.to_string());
            }
            None => println!("{text}"),
        }
    }

    /// A problem: always shown, on stderr.
    pub fn problem(&self, path: &str, why: impl Display) {
        let text = if path.is_empty() {
            format!("! {why}")
        } else {
            format!("! {path}: {why}")
        };
        match &self.bars {
            Some(bars) => bars.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// A progress handle for moving `size` bytes of `path`.
    pub fn transfer(&self, verb: &str, path: &str, size: u64) -> Progress {
        let bar = self.bars.as_ref().filter(|_| size >= BAR_FROM).map(|bars| {
            let bar = bars.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {wide_msg} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
                )
                .expect("a template"),
            );
            bar.set_prefix(verb.to_owned());
            bar.set_message(path.to_owned());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress { bar }
    }
}

/// Progress of one transfer; the bar goes away when this is dropped.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn set(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
