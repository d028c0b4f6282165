//! How many event loops serve connections: one while it keeps up, more only when they
//! measurably serve more commands.
//!
//! A second loop is not free. With the client on the same machine (every benchmark on a
//! 2-core box), a loop that is not saturated is waiting for its clients, and a second loop
//! only adds wake-ups, `epoll_wait` calls and, in the safe profile, a second fsync per round,
//! while taking CPU time from the clients: redis-benchmark at pipeline 1 measured 15–34% fewer
//! SETs per second against two loops than against one. When the loop is saturated (deep
//! pipelines) a second loop is worth 8–35%. The tuner therefore starts with one loop, tries one
//! more when every active loop has been busy for a while, keeps it only if the commands per
//! second rose, and now and then tries one fewer while more than one is active (the load may
//! have changed). A light load goes back to fewer loops at once.
//!
//! This is a pure state machine fed one [`Tick`] per period, so its rules are unit-tested
//! without clocks or threads; `io.rs` measures and applies.

/// What happened during one period (about 100 ms).
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Seconds the period lasted.
    pub secs: f64,
    /// Commands the server processed during it.
    pub cmds: u64,
    /// Busy fraction (0..=1) of each active loop, summed: the time not spent waiting for
    /// input (a loop waiting for its own write batch to commit counts as busy).
    pub busy: f64,
}

/// A loop this busy or more is saturated.
const SATURATED: f64 = 0.95;
/// Saturated periods in a row before one more loop is tried.
const HOT_TICKS: u32 = 3;
/// Periods skipped after a change (connections are moving).
const SETTLE_TICKS: u32 = 1;
/// Periods a trial is measured over.
const TRIAL_TICKS: u32 = 4;
/// More loops stay only if they serve this much more (and fewer stay if they serve at least
/// `1 / GAIN` as much: fewer loops cost less CPU for the same work).
const GAIN: f64 = 1.05;
/// Light periods in a row (busy fits in one loop fewer at half load) before shrinking.
const LIGHT_TICKS: u32 = 5;
/// Periods between trials after one that did not pay; doubles after each failure.
const BACKOFF_START: u32 = 20;
const BACKOFF_MAX: u32 = 600;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Steady,
    Trial(Trial),
}

/// `active` was changed from `from`; `base` is the rate (commands per second) before it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Trial {
    from: usize,
    base: f64,
    /// Periods still to skip before measuring.
    settle: u32,
    ticks: u32,
    cmds: u64,
    secs: f64,
}

#[derive(Debug, Clone)]
pub struct LoopTuner {
    max: usize,
    active: usize,
    state: State,
    hot: u32,
    light: u32,
    /// Periods to wait before the next trial up / down.
    up_hold: u32,
    up_backoff: u32,
    down_hold: u32,
    down_backoff: u32,
    /// Rate (commands per second) of the last few steady periods.
    recent: [f64; HOT_TICKS as usize],
    recent_n: usize,
}

impl LoopTuner {
    /// A tuner for up to `max` loops, starting with one.
    pub fn new(max: usize) -> LoopTuner {
        LoopTuner {
            max: max.max(1),
            active: 1,
            state: State::Steady,
            hot: 0,
            light: 0,
            up_hold: 0,
            up_backoff: BACKOFF_START,
            down_hold: BACKOFF_START,
            down_backoff: BACKOFF_START,
            recent: [0.0; HOT_TICKS as usize],
            recent_n: 0,
        }
    }

    /// A tuner for up to `max` loops with `active` in use (e.g. fixed by the operator until
    /// now).
    pub fn starting_at(max: usize, active: usize) -> LoopTuner {
        let mut t = LoopTuner::new(max);
        t.active = active.clamp(1, t.max);
        t
    }

    /// Loops in use now.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Feeds one period; returns the new number of loops when it changes.
    pub fn tick(&mut self, t: Tick) -> Option<usize> {
        let before = self.active;
        match &mut self.state {
            State::Trial(tr) if tr.settle > 0 => tr.settle -= 1,
            State::Trial(tr) => {
                tr.ticks += 1;
                tr.cmds += t.cmds;
                tr.secs += t.secs;
                if tr.ticks >= TRIAL_TICKS {
                    let (from, base, rate) = (tr.from, tr.base, rate(tr.cmds, tr.secs));
                    self.finish_trial(from, base, rate);
                }
            }
            State::Steady => self.steady(t),
        }
        (self.active != before).then_some(self.active)
    }

    fn steady(&mut self, t: Tick) {
        self.up_hold = self.up_hold.saturating_sub(1);
        self.down_hold = self.down_hold.saturating_sub(1);
        let r = rate(t.cmds, t.secs);
        self.recent[self.recent_n % self.recent.len()] = r;
        self.recent_n += 1;
        let n = self.active as f64;
        self.hot = if t.busy >= SATURATED * n {
            self.hot + 1
        } else {
            0
        };
        // Light: the load would fit in one loop fewer at half load (one loop: a quarter).
        self.light = if t.busy <= (n - 1.0).max(0.5) * 0.5 {
            self.light + 1
        } else {
            0
        };
        if self.light >= LIGHT_TICKS {
            // The load changed: what the trials learnt no longer holds. More loops than one
            // are not needed for it.
            self.up_backoff = BACKOFF_START;
            self.up_hold = 0;
            if self.active > 1 {
                self.set(self.active - 1);
                return;
            }
        }
        let base = self.recent_rate();
        if self.active < self.max && self.hot >= HOT_TICKS && self.up_hold == 0 {
            self.start_trial(self.active + 1, base);
        } else if self.active > 1 && self.down_hold == 0 && self.recent_n >= HOT_TICKS as usize {
            self.start_trial(self.active - 1, base);
        }
    }

    fn recent_rate(&self) -> f64 {
        let k = self.recent_n.min(self.recent.len()).max(1);
        self.recent[..k].iter().sum::<f64>() / k as f64
    }

    fn start_trial(&mut self, to: usize, base: f64) {
        self.state = State::Trial(Trial {
            from: self.active,
            base,
            settle: SETTLE_TICKS,
            ticks: 0,
            cmds: 0,
            secs: 0.0,
        });
        self.active = to;
    }

    fn finish_trial(&mut self, from: usize, base: f64, rate: f64) {
        let up = self.active > from;
        let keep = if up {
            rate >= base * GAIN
        } else {
            rate * GAIN >= base
        };
        if !keep {
            self.active = from;
        }
        // What was learnt holds for a while: after going up (kept) or failing to go down,
        // the next trial down waits; after failing to go up, so does the next trial up.
        match (up, keep) {
            (true, true) => {
                self.up_backoff = BACKOFF_START;
                self.down_hold = self.down_backoff;
            }
            (true, false) => {
                self.up_hold = self.up_backoff;
                self.up_backoff = (self.up_backoff * 2).min(BACKOFF_MAX);
            }
            (false, true) => {
                self.down_backoff = BACKOFF_START;
                self.down_hold = BACKOFF_START;
                self.up_hold = self.up_backoff;
            }
            (false, false) => {
                self.down_hold = self.down_backoff;
                self.down_backoff = (self.down_backoff * 2).min(BACKOFF_MAX);
            }
        }
        self.set(self.active);
    }

    /// Enters the steady state with `n` loops; the measurements start over.
    fn set(&mut self, n: usize) {
        self.active = n;
        self.state = State::Steady;
        self.hot = 0;
        self.light = 0;
        self.recent_n = 0;
    }
}

fn rate(cmds: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        cmds as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(busy: f64, rate: u64) -> Tick {
        Tick {
            secs: 0.1,
            cmds: rate / 10,
            busy,
        }
    }

    /// Runs `n` periods of a load that serves `rate(loops)` commands per second with each
    /// active loop `busy(loops)` busy; returns the loop count after each period.
    fn run(
        t: &mut LoopTuner,
        n: usize,
        busy: impl Fn(usize) -> f64,
        rate: impl Fn(usize) -> u64,
    ) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let a = t.active();
                t.tick(tick(busy(a) * a as f64, rate(a)));
                t.active()
            })
            .collect()
    }

    /// Saturated periods until the tuner settles on two loops (which serve 30% more).
    fn saturate_where_two_loops_pay(t: &mut LoopTuner) {
        run(t, 50, |_| 0.99, |a| if a == 2 { 650_000 } else { 500_000 });
        assert_eq!(t.active(), 2);
    }

    #[test]
    fn a_loop_that_keeps_up_stays_alone() {
        let mut t = LoopTuner::new(2);
        // Pipeline 1: the loop waits for its clients 10–40% of the time.
        let seen = run(&mut t, 1000, |_| 0.85, |_| 80_000);
        assert!(seen.iter().all(|&a| a == 1));
    }

    #[test]
    fn a_saturated_loop_gets_a_second_one_when_it_pays() {
        let mut t = LoopTuner::new(2);
        let seen = run(
            &mut t,
            200,
            |_| 0.99,
            |a| if a == 2 { 650_000 } else { 500_000 },
        );
        let first = seen
            .iter()
            .position(|&a| a == 2)
            .expect("never tried two loops");
        assert_eq!(first, HOT_TICKS as usize - 1, "{seen:?}");
        // Kept: trials down happen now and then, fail, and each failure waits longer.
        let ones_after: usize = seen[first..].iter().filter(|&&a| a == 1).count();
        assert!(ones_after * 6 < seen.len(), "{seen:?}");
        assert_eq!(*seen.last().unwrap(), 2);
    }

    #[test]
    fn a_second_loop_that_does_not_pay_is_dropped_and_retried_later_and_less_often() {
        let mut t = LoopTuner::new(2);
        // Saturated, but two loops serve fewer commands (pipeline 1 with the client on the
        // same two cores).
        let seen = run(
            &mut t,
            3000,
            |_| 0.99,
            |a| if a == 2 { 70_000 } else { 80_000 },
        );
        let trials: Vec<usize> = seen
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] == 1 && w[1] == 2)
            .map(|(i, _)| i + 1)
            .collect();
        assert!(trials.len() >= 3, "{trials:?}");
        let gaps: Vec<usize> = trials.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.windows(2).all(|g| g[1] >= g[0]),
            "backoff grows: {gaps:?}"
        );
        assert!(
            gaps[gaps.len() - 1] > 4 * gaps[0],
            "backoff grows: {gaps:?}"
        );
        let twos = seen.iter().filter(|&&a| a == 2).count();
        assert!(
            twos * 20 < seen.len(),
            "two loops {twos} of {} periods",
            seen.len()
        );
    }

    #[test]
    fn a_gain_within_noise_is_not_kept() {
        let mut t = LoopTuner::new(2);
        let seen = run(
            &mut t,
            100,
            |_| 0.99,
            |a| if a == 2 { 102_000 } else { 100_000 },
        );
        assert_eq!(*seen.last().unwrap(), 1, "{seen:?}");
    }

    #[test]
    fn when_the_load_changes_fewer_loops_are_tried_and_kept() {
        let mut t = LoopTuner::new(2);
        saturate_where_two_loops_pay(&mut t);
        // Same clients, now one loop serves them better (each of two loops is half busy,
        // which is not light enough to shrink on its own).
        let seen = run(
            &mut t,
            2000,
            |a| if a == 2 { 0.55 } else { 0.9 },
            |a| {
                if a == 2 {
                    70_000
                } else {
                    80_000
                }
            },
        );
        assert_eq!(*seen.last().unwrap(), 1, "{seen:?}");
    }

    #[test]
    fn a_light_load_goes_back_to_one_loop_without_a_trial() {
        let mut t = LoopTuner::new(2);
        saturate_where_two_loops_pay(&mut t);
        let seen = run(&mut t, 100, |_| 0.1, |_| 1_000);
        assert_eq!(seen.last(), Some(&1), "{seen:?}");
        // Within LIGHT_TICKS unless a trial of one loop was under way.
        let first = seen.iter().position(|&a| a == 1).unwrap();
        assert!(
            first < (LIGHT_TICKS + SETTLE_TICKS + TRIAL_TICKS) as usize,
            "{seen:?}"
        );
        // And a saturating load right after tries two loops again at once.
        let seen = run(
            &mut t,
            10,
            |_| 0.99,
            |a| if a == 2 { 650_000 } else { 500_000 },
        );
        assert_eq!(seen[HOT_TICKS as usize - 1], 2, "{seen:?}");
    }

    #[test]
    fn never_more_than_max_loops() {
        let mut t = LoopTuner::new(3);
        let seen = run(&mut t, 500, |_| 1.0, |a| 100_000 * a as u64 * a as u64);
        assert!(seen.iter().all(|&a| (1..=3).contains(&a)));
        assert_eq!(*seen.last().unwrap(), 3);
        let mut t = LoopTuner::new(1);
        assert!(run(&mut t, 100, |_| 1.0, |_| 1).iter().all(|&a| a == 1));
    }
}
