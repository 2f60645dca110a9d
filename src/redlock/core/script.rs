//! [`Script`]: a Lua script body with its SHA1.

/// A script body with its SHA1, computed once.
pub(crate) struct Script {
    pub(crate) body: &'static str,
    pub(crate) sha: String,
    /// It must reach every node that will later vote, even one passed by or skipped
    /// (sent there without waiting for the reply, see [`Call::must_reach`]): a release (a
    /// key it leaves would block that node until its ttl) or a fencing write-back (a
    /// counter it leaves low could let a later token go backwards).
    ///
    /// [`Call::must_reach`]: crate::redlock::node::Call::must_reach
    pub(crate) must_reach: bool,
}

impl Script {
    pub(crate) fn new(body: &'static str) -> Script {
        Script {
            body,
            sha: redis::Script::new(body).get_hash().to_owned(),
            must_reach: false,
        }
    }

    /// A script that must reach every node (see [`Script::must_reach`]).
    pub(crate) fn must_reach(body: &'static str) -> Script {
        Script {
            must_reach: true,
            ..Script::new(body)
        }
    }
}
