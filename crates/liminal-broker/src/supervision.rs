//! Supervision helpers shared by the broker's supervisors: restart
//! intensity, actor paths and the live tree snapshot.

use std::collections::VecDeque;
use std::time::Instant;

use serde::Serialize;

use crate::config::RestartIntensity;

/// Tracks recent restarts of one child to enforce a restart intensity: a
/// child that fails more than `max_restarts` times within `within` makes its
/// supervisor give up and escalate, as in OTP.
#[derive(Debug)]
pub struct RestartBudget {
    intensity: RestartIntensity,
    recent: VecDeque<Instant>,
    total: u64,
}

impl RestartBudget {
    pub fn new(intensity: RestartIntensity) -> RestartBudget {
        RestartBudget {
            intensity,
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Records a failure at `now` and returns whether a restart is allowed.
    pub fn allow_restart(&mut self, now: Instant) -> bool {
        while let Some(oldest) = self.recent.front() {
            if now.duration_since(*oldest) > self.intensity.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.intensity.max_restarts as usize {
            return false;
        }
        self.recent.push_back(now);
        self.total += 1;
        true
    }

    /// Restarts performed since the child was first started.
    pub fn total_restarts(&self) -> u64 {
        self.total
    }
}

/// One node of the live supervision tree, as served on `/supervision`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TreeNode {
    /// Slash-separated path from the root, for example `broker/channels/orders`.
    pub path: String,
    /// `supervisor`, `channel`, `connection`, `conversation` or `participant`.
    pub kind: &'static str,
    /// `running`, `restarting` or `stopped`.
    pub state: &'static str,
    pub restarts: u64,
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    pub fn leaf(path: String, kind: &'static str, restarts: u64) -> TreeNode {
        TreeNode {
            path,
            kind,
            state: "running",
            restarts,
            children: Vec::new(),
        }
    }

    /// Renders the tree indented, one node a line, with restart counts.
    pub fn render(&self) -> String {
        let mut output = String::new();
        self.render_into(0, &mut output);
        output
    }

    fn render_into(&self, depth: usize, output: &mut String) {
        let name = self.path.rsplit('/').next().unwrap_or(&self.path);
        output.push_str(&"  ".repeat(depth));
        output.push_str(&format!(
            "{name} ({kind}, {state}, restarts={restarts})\n",
            kind = self.kind,
            state = self.state,
            restarts = self.restarts
        ));
        for child in &self.children {
            child.render_into(depth + 1, output);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn budget_allows_up_to_max_within_window() {
        let mut budget = RestartBudget::new(RestartIntensity {
            max_restarts: 2,
            within: Duration::from_secs(10),
        });
        let start = Instant::now();
        assert!(budget.allow_restart(start));
        assert!(budget.allow_restart(start + Duration::from_secs(1)));
        assert!(!budget.allow_restart(start + Duration::from_secs(2)));
        assert!(budget.allow_restart(start + Duration::from_secs(12)));
        assert_eq!(budget.total_restarts(), 3);
    }
}
