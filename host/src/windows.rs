//! Per-device window assembly: readings in (any order, possibly redelivered), windows out.
//!
//! A device's window is its newest `size` readings, emitted every `hop` accepted readings. A
//! reading whose timestamp is already held is a duplicate (MQTT redelivery) and changes nothing;
//! one at or before the end of the last emitted window is late and cannot change what was
//! emitted; both are counted by the caller, neither creates a window. Out-of-order readings newer
//! than the last window are placed by timestamp. After a restart the assembler is rebuilt from
//! the store with [`DeviceWindows::restore`], so redelivered readings do not produce a second
//! window either.

use crate::types::{Channel, Window};
use crate::types::{Reading, Samples};
use std::collections::BTreeMap;

/// Readings between two windows of a device when neither the host configuration nor the
/// tenant says otherwise.
pub const DEFAULT_HOP: u32 = 8;

/// What became of a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// Held; no window yet.
    Held,
    /// Held, and it completed this window.
    Window(Window),
    /// Same timestamp as a reading already held.
    Duplicate,
    /// At or before the end of the last emitted window.
    Late,
}

/// The window state of one device.
#[derive(Debug, Clone)]
pub struct DeviceWindows {
    size: usize,
    hop: usize,
    readings: BTreeMap<i64, Reading>,
    emitted_through: Option<i64>,
    since_last: usize,
}

impl DeviceWindows {
    /// Windows of `size` readings every `hop` readings (both at least 1).
    pub fn new(size: usize, hop: usize) -> DeviceWindows {
        DeviceWindows {
            size: size.max(1),
            hop: hop.max(1),
            readings: BTreeMap::new(),
            emitted_through: None,
            since_last: 0,
        }
    }

    /// Rebuilds the state after a restart: the newest stored readings, the end of the last
    /// window processed, and how many readings were accepted after it.
    pub fn restore(
        size: usize,
        hop: usize,
        recent: impl IntoIterator<Item = Reading>,
        emitted_through: Option<i64>,
    ) -> DeviceWindows {
        let mut w = DeviceWindows::new(size, hop);
        for r in recent {
            w.readings.insert(r.ts_ms, r);
        }
        w.emitted_through = emitted_through;
        w.since_last = w.readings.keys().filter(|&&t| emitted_through.is_none_or(|e| t > e)).count();
        w.trim();
        w
    }

    /// Accepts one reading.
    pub fn push(&mut self, reading: Reading) -> Pushed {
        if self.readings.contains_key(&reading.ts_ms) {
            return Pushed::Duplicate;
        }
        if self.emitted_through.is_some_and(|e| reading.ts_ms <= e) {
            return Pushed::Late;
        }
        self.readings.insert(reading.ts_ms, reading);
        self.since_last += 1;
        if self.readings.len() < self.size || self.since_last < self.hop {
            self.trim();
            return Pushed::Held;
        }
        let window = self.assemble();
        self.emitted_through = Some(window.end_ms);
        self.since_last = 0;
        self.trim();
        Pushed::Window(window)
    }

    /// Keeps what the next window can need: the newest `size` readings, plus every reading
    /// after the last window (those are needed to count the hop).
    fn trim(&mut self) {
        while self.readings.len() > self.size.max(self.since_last) {
            self.readings.pop_first();
        }
    }

    /// The newest `size` readings as a window.
    fn assemble(&self) -> Window {
        let newest: Vec<&Reading> = self.readings.values().rev().take(self.size).rev().collect();
        assemble(&newest)
    }
}

/// One device's readings (oldest first, at least one) as a window: the channels in the order
/// they first appear, each reading's samples appended. The one assembly of windows, live
/// ([`DeviceWindows::push`]) and for a window taken up again from the store (deferred windows).
pub fn assemble(newest: &[&Reading]) -> Window {
    let first = newest[0];
    let mut channels: Vec<Channel> = Vec::new();
    let mut counts: Vec<Option<u32>> = Vec::new(); // per channel: samples per reading, None = varies
    for r in newest {
        for (j, (name, samples)) in r.channels.iter().enumerate() {
            // Readings of a device nearly always carry the same channels (sorted by name):
            // look where the previous reading had this one first.
            let found = if channels.get(j).is_some_and(|c| &c.name == name) {
                Some(j)
            } else {
                channels.iter().position(|c| &c.name == name)
            };
            let i = match found {
                Some(i) => i,
                None => {
                    // Room for the whole window when every reading has this many samples.
                    let room = Vec::with_capacity(newest.len() * samples_len(samples) as usize);
                    channels.push(Channel::new(name.clone(), room, 0));
                    counts.push(Some(samples_len(samples)));
                    channels.len() - 1
                }
            };
            match samples {
                Samples::Scalar(x) => channels[i].samples.push(*x),
                Samples::Burst(xs) => channels[i].samples.extend_from_slice(xs),
            }
            if counts[i] != Some(samples_len(samples)) {
                counts[i] = None;
            }
        }
    }
    for (c, n) in channels.iter_mut().zip(counts) {
        c.samples_per_reading = n.unwrap_or(0);
    }
    // A channel's sample rate and unit as its newest reading that states them says.
    for r in newest.iter().rev().filter(|r| !r.described.is_empty()) {
        for d in &r.described {
            if let Some(c) = channels.iter_mut().find(|c| c.name == d.channel) {
                c.sample_rate_hz = c.sample_rate_hz.or(d.fs_hz);
                c.unit = c.unit.take().or_else(|| d.unit.clone());
            }
        }
    }
    let last = newest[newest.len() - 1];
    Window {
        tenant: first.tenant.clone(),
        device: first.device.clone(),
        start_ms: first.ts_ms,
        end_ms: last.ts_ms,
        timestamps_ms: newest.iter().map(|r| r.ts_ms).collect(),
        channels,
        asset: Vec::new(),
    }
}

fn samples_len(s: &Samples) -> u32 {
    match s {
        Samples::Scalar(_) => 1,
        Samples::Burst(xs) => xs.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ts: i64, burst: usize) -> Reading {
        Reading {
            tenant: "acme".into(),
            device: "M1".into(),
            ts_ms: ts,
            seq: None,
            channels: vec![
                ("temperature".into(), Samples::Scalar(ts as f32)),
                ("vibration".into(), Samples::Burst(vec![ts as f32; burst])),
            ],
            described: Vec::new(),
        }
    }

    fn windows(w: &mut DeviceWindows, ts: impl IntoIterator<Item = i64>) -> Vec<Window> {
        ts.into_iter()
            .filter_map(|t| match w.push(reading(t, 2)) {
                Pushed::Window(win) => Some(win),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn size_and_hop() {
        let mut w = DeviceWindows::new(4, 2);
        let out = windows(&mut w, 1..=9);
        let ends: Vec<i64> = out.iter().map(|w| w.end_ms).collect();
        assert_eq!(ends, vec![4, 6, 8]);
        assert_eq!(out[1].timestamps_ms, vec![3, 4, 5, 6]);
        let t = out[1].channels.iter().find(|c| c.name == "temperature").expect("channel");
        assert_eq!((t.samples.clone(), t.samples_per_reading), (vec![3.0, 4.0, 5.0, 6.0], 1));
        let v = out[1].channels.iter().find(|c| c.name == "vibration").expect("channel");
        assert_eq!((v.samples.len(), v.samples_per_reading), (8, 2));
    }

    #[test]
    fn redelivery_and_late_readings_create_no_window() {
        let mut w = DeviceWindows::new(3, 1);
        assert_eq!(windows(&mut w, [1, 2, 3]).len(), 1);
        assert_eq!(w.push(reading(3, 2)), Pushed::Duplicate);
        assert_eq!(w.push(reading(2, 2)), Pushed::Duplicate, "still held");
        assert_eq!(w.push(reading(0, 2)), Pushed::Late, "older than the last window");
        assert_eq!(windows(&mut w, [4]).len(), 1);
    }

    #[test]
    fn out_of_order_readings_are_placed_by_time() {
        let mut w = DeviceWindows::new(3, 3);
        let out = windows(&mut w, [10, 30, 20]);
        assert_eq!(out[0].timestamps_ms, vec![10, 20, 30]);
    }

    #[test]
    fn varying_burst_lengths_report_zero_samples_per_reading() {
        let mut w = DeviceWindows::new(2, 1);
        w.push(reading(1, 2));
        let Pushed::Window(win) = w.push(reading(2, 3)) else { panic!("window") };
        let v = win.channels.iter().find(|c| c.name == "vibration").expect("channel");
        assert_eq!((v.samples.len(), v.samples_per_reading), (5, 0));
    }

    #[test]
    fn restore_after_restart_does_not_repeat_a_window() {
        // Before the crash: readings 1..=5 stored, the window ending at 4 was processed.
        let mut w = DeviceWindows::restore(4, 2, (2..=5).map(|t| reading(t, 2)), Some(4));
        // The broker redelivers 5 (never acknowledged): nothing new.
        assert_eq!(w.push(reading(5, 2)), Pushed::Duplicate);
        // 6 completes the next hop exactly as without the crash.
        let Pushed::Window(win) = w.push(reading(6, 2)) else { panic!("window") };
        assert_eq!(win.timestamps_ms, vec![3, 4, 5, 6]);
    }
}
