//! The three-way rule every merge applies to its units (files, catalog entries, DICOM
//! attributes and items, table rows): a unit changed on one side only takes that side's
//! version, one changed on both sides alike keeps it, and one changed on both differently is
//! a conflict. A version is `None` where the unit is absent.

/// What the three-way rule makes of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Neither side changed it.
    Unchanged,
    /// Both changed it alike: either side's version.
    Both,
    /// Only this branch changed it: ours.
    Ours,
    /// Only the other side changed it: theirs.
    Theirs,
    /// Both changed it, differently.
    Conflict,
}

/// The rule for a unit whose versions are `b` (base), `o` (ours) and `t` (theirs).
pub(crate) fn pick<T: PartialEq + ?Sized>(b: Option<&T>, o: Option<&T>, t: Option<&T>) -> Pick {
    if o == t {
        if o == b { Pick::Unchanged } else { Pick::Both }
    } else if t == b {
        Pick::Ours
    } else if o == b {
        Pick::Theirs
    } else {
        Pick::Conflict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_case_of_the_rule() {
        let (x, y, z) = (Some("x"), Some("y"), Some("z"));
        assert_eq!(pick(x, x, x), Pick::Unchanged);
        assert_eq!(pick(x, y, y), Pick::Both);
        assert_eq!(pick(x, None, None), Pick::Both);
        assert_eq!(pick(x, y, x), Pick::Ours);
        assert_eq!(pick(None, y, None), Pick::Ours);
        assert_eq!(pick(x, x, None), Pick::Theirs);
        assert_eq!(pick(x, y, z), Pick::Conflict);
        assert_eq!(pick(x, None, z), Pick::Conflict);
        assert_eq!(pick(None, y, z), Pick::Conflict);
    }
}
