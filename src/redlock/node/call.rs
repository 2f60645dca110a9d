//! The requests sent to a node: a plain command or a script call, built once per operation
//! and sent, as is, to every node.
//!
//! Their shape is wire-level on purpose: every [transport](super::transport) interprets the
//! same `Call` (Redis sends it; a simulated node would apply what the script does) and
//! answers with the `redis::Value` real Redis would.

use redis::Cmd;

use crate::redlock::core::scripts::Script;

/// A request built once per operation and sent, as is, to every node.
#[derive(Clone)]
pub(crate) enum Call {
    /// A plain command.
    Command(Cmd),
    /// A script, by SHA.
    Script(ScriptCall),
}

impl Call {
    /// `EVALSHA sha key_count ...`, `args` appending the keys and arguments; the `EVAL`
    /// fallback is built only for a node that does not know the script (after a restart or
    /// `SCRIPT FLUSH`).
    pub(crate) fn script(
        script: &'static Script,
        key_count: usize,
        args: impl FnOnce(&mut Cmd),
    ) -> Call {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&script.sha).arg(key_count);
        args(&mut evalsha);
        Call::Script(ScriptCall { script, evalsha })
    }

    /// Whether this call must reach every node, even one passed by or skipped: a release
    /// (a key it leaves blocks that node until its ttl) or a fencing write-back (a counter
    /// left low could let a later token go backwards). See [`super`]'s docs.
    pub(crate) fn must_reach(&self) -> bool {
        matches!(self, Call::Script(call) if call.script.must_reach)
    }

    /// For a call that [must reach](Self::must_reach) every node, the same request sent
    /// without waiting for its reply (by SHA: the scripts are loaded on every connection);
    /// `None` for anything else.
    pub(crate) fn unanswered(&self) -> Option<Call> {
        match self {
            Call::Script(call) if call.script.must_reach => {
                let mut cmd = call.evalsha.clone();
                cmd.set_no_response(true);
                Some(Call::Command(cmd))
            }
            _ => None,
        }
    }
}

/// A script call: `EVALSHA sha key_count keys.. args..`, with `EVAL` as the fallback.
#[derive(Clone)]
pub(crate) struct ScriptCall {
    script: &'static Script,
    evalsha: Cmd,
}

// The accessors are the simulated node's way of reading a call (it applies what the script
// does), and the tests'.
#[allow(dead_code)]
impl ScriptCall {
    /// The script this calls.
    pub(crate) fn script(&self) -> &'static Script {
        self.script
    }

    /// The `EVALSHA` command as sent.
    pub(crate) fn evalsha(&self) -> &Cmd {
        &self.evalsha
    }

    /// The key count, keys and arguments (`EVALSHA`'s arguments after the SHA), as sent.
    fn parameters(&self) -> impl Iterator<Item = &[u8]> {
        self.evalsha
            .args_iter()
            .skip(2)
            .filter_map(|arg| match arg {
                redis::Arg::Simple(bytes) => Some(bytes),
                _ => None,
            })
    }

    /// The script's `KEYS`.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.parameters().skip(1).take(self.key_count())
    }

    /// The script's `ARGV`.
    pub(crate) fn args(&self) -> impl Iterator<Item = &[u8]> {
        self.parameters().skip(1 + self.key_count())
    }

    fn key_count(&self) -> usize {
        self.parameters()
            .next()
            .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
            .unwrap_or(0)
    }

    /// The same call as `EVAL body key_count ...`.
    pub(crate) fn eval(&self) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.script.body);
        for parameter in self.parameters() {
            cmd.arg(parameter);
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redlock::core::scripts::EXTEND;

    #[test]
    fn a_script_call_reads_back_its_keys_and_args() {
        let call = Call::script(&EXTEND, 2, |cmd| {
            cmd.arg(&["a", "b"]).arg("token").arg(30_000u64).arg(2);
        });
        let Call::Script(call) = call else {
            panic!("a script call")
        };
        assert!(std::ptr::eq(call.script(), &*EXTEND));
        let keys: Vec<_> = call.keys().collect();
        assert_eq!(keys, [b"a".as_slice(), b"b"]);
        let args: Vec<_> = call.args().collect();
        assert_eq!(args, [b"token".as_slice(), b"30000", b"2"]);
        // EVAL, the body, the key count, 2 keys and 3 arguments.
        assert_eq!(call.eval().args_iter().count(), 8);
    }
}
