//! How the shared state is declared: once, as a list of fields each with its rule for
//! merging two versions of one budget ([`Join`]) and whether it is a time on the store's
//! clock. From that one declaration ([`shared_record!`](crate::shared_record)) follow the
//! Rust type, its encoding (serde, every field defaulted so that a state written by an
//! older version still loads), the merge of two versions
//! ([`BudgetState::joined`](crate::BudgetState::joined)), the move onto another clock
//! ([`BudgetState::rebased`](crate::BudgetState::rebased)) and the list of fields with
//! their rules ([`BudgetState::FIELDS`](crate::BudgetState::FIELDS)).
//!
//! No store mirrors the arithmetic: the file store and the Redis store both run this
//! crate's Rust on the encoded state, so there is nothing to keep in step by hand.

/// How two versions of one field merge when two versions of a budget meet (a store that
/// lost the state rejoined by processes that each kept their own copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// The larger: times up to which capacity was given, counters that only grow.
    Max,
    /// The smaller: shares and estimates where smaller is the cautious side.
    Min,
    /// The value of the version that saw the later time (what was learned last).
    Newer,
    /// Both versions' entries, the later of two with the same key.
    Union,
}

/// A field type the declaration can merge.
pub trait Joinable: Sized {
    /// `mine` and `theirs` merged by `rule`; `mine_newer` tells which saw the later time.
    fn join(rule: Join, mine: &Self, theirs: &Self, mine_newer: bool) -> Self;
}

/// A time on the store's clock, µs, that moves when the state moves onto another clock.
pub trait Clocked {
    /// The time moved by `shift` µs (`forward` or back), floored at 0.
    fn shifted(&self, shift: u64, forward: bool) -> Self;
}

macro_rules! joinable_scalar {
    ($($t:ty),*) => {$(
        impl Joinable for $t {
            fn join(rule: Join, mine: &Self, theirs: &Self, mine_newer: bool) -> Self {
                match rule {
                    Join::Max => if mine >= theirs { *mine } else { *theirs },
                    Join::Min => if mine <= theirs { *mine } else { *theirs },
                    Join::Newer | Join::Union => if mine_newer { *mine } else { *theirs },
                }
            }
        }
    )*};
}
joinable_scalar!(u64, u32, u8, f64);

impl<const N: usize> Joinable for [u64; N] {
    fn join(rule: Join, mine: &Self, theirs: &Self, mine_newer: bool) -> Self {
        let mut out = *mine;
        for (o, t) in out.iter_mut().zip(theirs) {
            *o = u64::join(rule, o, t, mine_newer);
        }
        out
    }
}

impl Clocked for u64 {
    fn shifted(&self, shift: u64, forward: bool) -> Self {
        if *self == 0 {
            // 0 is "never" on every clock.
            return 0;
        }
        if forward {
            self.saturating_add(shift)
        } else {
            self.saturating_sub(shift).max(1)
        }
    }
}

impl<const N: usize> Clocked for [u64; N] {
    fn shifted(&self, shift: u64, forward: bool) -> Self {
        self.map(|t| t.shifted(shift, forward))
    }
}

/// Declares the shared record: a struct whose every field has a doc comment, a type, a
/// [`Join`] rule and, for times on the store's clock, the word `time`:
///
/// ```ignore
/// shared_record! {
///     /// The record.
///     pub struct State {
///         /// When it was last seen.
///         seen_us: u64 => Max, time;
///         /// A count.
///         count: u64 => Max;
///     }
/// }
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! shared_record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident : $ty:ty => $rule:ident $(, $time:ident)?;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            $(
                $(#[doc = $doc])+
                pub $field: $ty,
            )*
        }

        impl $name {
            /// Every field of the record, its merge rule, and whether it is a time on the
            /// store's clock: the one declaration the type, its encoding, the merge and the
            /// clock moves follow.
            pub const FIELDS: &'static [(&'static str, $crate::record::Join, bool)] = &[
                $( (stringify!($field), $crate::record::Join::$rule, $crate::shared_record!(@is_time $($time)?)) ),*
            ];

            /// Two versions of one budget merged field by field, each by its declared
            /// rule (`self` is this process's copy; `seen_us` tells which is newer).
            pub fn joined(&self, theirs: &Self) -> Self {
                let mine_newer = self.seen_us >= theirs.seen_us;
                Self {
                    $( $field: $crate::record::Joinable::join(
                        $crate::record::Join::$rule, &self.$field, &theirs.$field, mine_newer) ),*
                }
            }

            /// Every time on the store's clock moved by `shift` µs, forward or back (0,
            /// "never", stays 0).
            pub fn shift_times(&mut self, shift: u64, forward: bool) {
                $( $crate::shared_record!(@shift self, $field, shift, forward $(, $time)?); )*
            }
        }
    };
    (@is_time time) => { true };
    (@is_time) => { false };
    (@shift $self:ident, $field:ident, $shift:ident, $forward:ident, time) => {
        $self.$field = $crate::record::Clocked::shifted(&$self.$field, $shift, $forward)
    };
    (@shift $self:ident, $field:ident, $shift:ident, $forward:ident) => {};
}
