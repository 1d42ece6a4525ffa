//! A topic tree keyed by Topic Filter levels, generic over what a filter's node holds.
//!
//! ```text
//!   root ─ "sport" ─ "+" ─ "score"   (value: subscribers of sport/+/score)
//!                  └ "#"             (value: subscribers of sport/#)
//! ```
//!
//! Matching a Topic Name walks literal, `+` and `#` children level by level. Wildcards at the
//! first level do not match topics that start with `$` (v5 [MQTT-4.7.2-1]). Depth is bounded by
//! the engine's `max_topic_levels`, which keeps the recursive match within a small stack.

use crate::hash::KeyedMap;

#[derive(Debug)]
struct Node<T> {
    /// Literal levels.
    children: KeyedMap<Box<[u8]>, Node<T>>,
    /// The `+` and `#` children, kept apart: a match looks both up at every level, and this
    /// way without hashing.
    plus: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    value: Option<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: KeyedMap::default(),
            plus: None,
            hash: None,
            value: None,
        }
    }
}

impl<T> Node<T> {
    fn child(&self, level: &[u8]) -> Option<&Node<T>> {
        match level {
            b"+" => self.plus.as_deref(),
            b"#" => self.hash.as_deref(),
            l => self.children.get(l),
        }
    }

    fn child_mut(&mut self, level: &[u8]) -> Option<&mut Node<T>> {
        match level {
            b"+" => self.plus.as_deref_mut(),
            b"#" => self.hash.as_deref_mut(),
            l => self.children.get_mut(l),
        }
    }

    fn child_or_insert(&mut self, level: &[u8]) -> &mut Node<T> {
        match level {
            b"+" => self.plus.get_or_insert_with(Box::default),
            b"#" => self.hash.get_or_insert_with(Box::default),
            l => self.children.entry(l.into()).or_default(),
        }
    }

    fn remove_child(&mut self, level: &[u8]) {
        match level {
            b"+" => self.plus = None,
            b"#" => self.hash = None,
            l => {
                self.children.remove(l);
            }
        }
    }

    fn is_leaf(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.hash.is_none()
    }

    /// Every child with its level: literals, then `+`, then `#`.
    fn each_child(&self) -> impl Iterator<Item = (&[u8], &Node<T>)> {
        self.children
            .iter()
            .map(|(k, v)| (&k[..], v))
            .chain(self.plus.as_deref().map(|n| (&b"+"[..], n)))
            .chain(self.hash.as_deref().map(|n| (&b"#"[..], n)))
    }
}

/// Filter -> `T`, with wildcard matching of Topic Names.
#[derive(Debug)]
pub struct Trie<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for Trie<T> {
    fn default() -> Self {
        Trie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> Trie<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of filters holding a value.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `filter`, created with `make` if absent.
    pub fn entry_or_insert_with(&mut self, filter: &[u8], make: impl FnOnce() -> T) -> &mut T {
        let mut node = &mut self.root;
        for level in filter.split(|&b| b == b'/') {
            node = node.child_or_insert(level);
        }
        if node.value.is_none() {
            self.len += 1;
        }
        node.value.get_or_insert_with(make)
    }

    pub fn get_mut(&mut self, filter: &[u8]) -> Option<&mut T> {
        let mut node = &mut self.root;
        for level in filter.split(|&b| b == b'/') {
            node = node.child_mut(level)?;
        }
        node.value.as_mut()
    }

    pub fn get(&self, filter: &[u8]) -> Option<&T> {
        let mut node = &self.root;
        for level in filter.split(|&b| b == b'/') {
            node = node.child(level)?;
        }
        node.value.as_ref()
    }

    /// Removes the value of `filter` if `remove(&mut value)` returns true, pruning empty nodes.
    /// Returns whether the value was removed.
    pub fn remove_if(&mut self, filter: &[u8], remove: impl FnOnce(&mut T) -> bool) -> bool {
        let levels: Vec<&[u8]> = filter.split(|&b| b == b'/').collect();
        let removed = Self::remove_rec(&mut self.root, &levels, remove);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_rec(
        node: &mut Node<T>,
        levels: &[&[u8]],
        remove: impl FnOnce(&mut T) -> bool,
    ) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            let Some(v) = node.value.as_mut() else {
                return false;
            };
            if remove(v) {
                node.value = None;
                return true;
            }
            return false;
        };
        let Some(child) = node.child_mut(first) else {
            return false;
        };
        let removed = Self::remove_rec(child, rest, remove);
        if removed && child.value.is_none() && child.is_leaf() {
            node.remove_child(first);
        }
        removed
    }

    /// Calls `f` with the value of every filter that matches the Topic Name `topic`.
    pub fn for_each_match<'a>(&'a self, topic: &[u8], mut f: impl FnMut(&'a T)) {
        let dollar = topic.first() == Some(&b'$');
        Self::match_rec(&self.root, topic, true, dollar, &mut f);
    }

    fn match_rec<'a>(
        node: &'a Node<T>,
        rest: &[u8],
        first: bool,
        dollar: bool,
        f: &mut dyn FnMut(&'a T),
    ) {
        // Wildcards at the first level do not match `$` topics (v5 [MQTT-4.7.2-1]).
        let wild_ok = !(first && dollar);
        if wild_ok {
            if let Some(v) = node.hash.as_ref().and_then(|n| n.value.as_ref()) {
                f(v);
            }
        }
        let (level, tail) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let plus = if wild_ok { node.plus.as_deref() } else { None };
        for child in [node.children.get(level), plus].into_iter().flatten() {
            match tail {
                Some(t) => Self::match_rec(child, t, false, dollar, f),
                None => {
                    if let Some(v) = child.value.as_ref() {
                        f(v);
                    }
                    // "a/#" also matches "a" (v5 4.7.1.2).
                    if let Some(v) = child.hash.as_ref().and_then(|n| n.value.as_ref()) {
                        f(v);
                    }
                }
            }
        }
    }

    /// Visits every (filter, value) pair; used for retained-message scans and admin listings.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &T)) {
        let mut path = Vec::new();
        Self::each_rec(&self.root, &mut path, true, &mut f);
    }

    fn each_rec(node: &Node<T>, path: &mut Vec<u8>, root: bool, f: &mut impl FnMut(&[u8], &T)) {
        if !root {
            if let Some(v) = node.value.as_ref() {
                f(path, v);
            }
        }
        for (level, child) in node.each_child() {
            let len = path.len();
            if !root {
                path.push(b'/');
            }
            path.extend_from_slice(level);
            Self::each_rec(child, path, false, f);
            path.truncate(len);
        }
    }

    /// Calls `f` with every value whose key (a Topic Name, in the retained store) matches the
    /// Topic Filter `filter`. The inverse of [`Trie::for_each_match`].
    pub fn for_each_matched_by<'a>(&'a self, filter: &[u8], mut f: impl FnMut(&'a T)) {
        self.matched_by_while(filter, |v| {
            f(v);
            true
        });
    }

    /// As [`Trie::for_each_matched_by`], stopping as soon as `f` returns false (a bounded
    /// listing need not walk the rest of a large store).
    pub fn matched_by_while<'a>(&'a self, filter: &[u8], mut f: impl FnMut(&'a T) -> bool) {
        let levels: Vec<&[u8]> = filter.split(|&b| b == b'/').collect();
        Self::matched_by_rec(&self.root, &levels, true, &mut f);
    }

    /// Returns false once `f` asked to stop.
    fn matched_by_rec<'a>(
        node: &'a Node<T>,
        levels: &[&[u8]],
        first: bool,
        f: &mut impl FnMut(&'a T) -> bool,
    ) -> bool {
        let Some((level, rest)) = levels.split_first() else {
            return node.value.as_ref().is_none_or(&mut *f);
        };
        match *level {
            b"#" => {
                // "#" matches the parent level and everything below, except `$` topics at root.
                if !first && !node.value.as_ref().is_none_or(&mut *f) {
                    return false;
                }
                for (name, child) in node.each_child() {
                    if first && name.first() == Some(&b'$') {
                        continue;
                    }
                    if !Self::all_below(child, f) {
                        return false;
                    }
                }
                true
            }
            b"+" => {
                for (name, child) in node.each_child() {
                    if first && name.first() == Some(&b'$') {
                        continue;
                    }
                    if !Self::matched_by_rec(child, rest, false, f) {
                        return false;
                    }
                }
                true
            }
            lit => match node.child(lit) {
                Some(child) => Self::matched_by_rec(child, rest, false, f),
                None => true,
            },
        }
    }

    fn all_below<'a>(node: &'a Node<T>, f: &mut impl FnMut(&'a T) -> bool) -> bool {
        if !node.value.as_ref().is_none_or(&mut *f) {
            return false;
        }
        for (_, child) in node.each_child() {
            if !Self::all_below(child, f) {
                return false;
            }
        }
        true
    }
}

/// Reference matcher used by tests: does Topic Filter `filter` match Topic Name `topic`?
pub fn filter_matches(filter: &[u8], topic: &[u8]) -> bool {
    let dollar = topic.first() == Some(&b'$');
    let mut f = filter.split(|&b| b == b'/');
    let mut t = topic.split(|&b| b == b'/');
    let mut first = true;
    loop {
        match (f.next(), t.next()) {
            (Some(b"#"), _) => return !(first && dollar),
            (Some(b"+"), Some(_)) => {
                if first && dollar {
                    return false;
                }
            }
            (Some(a), Some(b)) => {
                if a != b {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(trie: &Trie<u32>, topic: &str) -> Vec<u32> {
        let mut v = Vec::new();
        trie.for_each_match(topic.as_bytes(), |x| v.push(*x));
        v.sort();
        v
    }

    #[test]
    fn wildcards_match_levels() {
        let mut t = Trie::new();
        for (i, f) in ["a/b", "a/+", "a/#", "#", "+/b", "+", "a/b/c"]
            .iter()
            .enumerate()
        {
            *t.entry_or_insert_with(f.as_bytes(), || 0) = i as u32;
        }
        assert_eq!(matches(&t, "a/b"), vec![0, 1, 2, 3, 4]);
        assert_eq!(matches(&t, "a"), vec![2, 3, 5]);
        assert_eq!(matches(&t, "a/b/c"), vec![2, 3, 6]);
    }

    /// v5 [MQTT-4.7.2-1]: wildcards at the first level do not match `$` topics.
    #[test]
    fn dollar_topics_not_matched_by_leading_wildcards() {
        let mut t = Trie::new();
        *t.entry_or_insert_with(b"#", || 0) = 1;
        *t.entry_or_insert_with(b"+/x", || 0) = 2;
        *t.entry_or_insert_with(b"$SYS/#", || 0) = 3;
        assert_eq!(matches(&t, "$SYS/x"), vec![3]);
        assert_eq!(matches(&t, "a/x"), vec![1, 2]);
    }

    #[test]
    fn remove_prunes() {
        let mut t = Trie::new();
        t.entry_or_insert_with(b"a/b/c", || 1);
        assert!(t.remove_if(b"a/b/c", |_| true));
        assert!(t.is_empty());
        assert!(t.root.is_leaf());
        assert!(!t.remove_if(b"a/b/c", |_| true));
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("$s".to_string()),
            Just("".to_string())
        ]
    }

    fn filter_level() -> impl Strategy<Value = String> {
        prop_oneof![level(), Just("+".to_string())]
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5).prop_map(|v| v.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(filter_level(), 1..5),
            any::<bool>(),
        )
            .prop_map(|(mut v, hash)| {
                if hash {
                    v.push("#".into());
                }
                v.join("/")
            })
    }

    proptest! {
        /// The trie agrees with the naive matcher, in both directions.
        #[test]
        fn trie_agrees_with_naive(filters in proptest::collection::vec(filter(), 1..20), topics in proptest::collection::vec(topic(), 1..20)) {
            let mut t = Trie::new();
            for (i, f) in filters.iter().enumerate() {
                t.entry_or_insert_with(f.as_bytes(), Vec::new).push(i);
            }
            for topic in &topics {
                let mut got = Vec::new();
                t.for_each_match(topic.as_bytes(), |v: &Vec<usize>| got.extend_from_slice(v));
                got.sort();
                let mut want: Vec<usize> = filters.iter().enumerate()
                    .filter(|(_, f)| filter_matches(f.as_bytes(), topic.as_bytes()))
                    .map(|(i, _)| i).collect();
                want.sort();
                prop_assert_eq!(got, want, "topic {}", topic);
            }
            let mut store = Trie::new();
            for (i, topic) in topics.iter().enumerate() {
                *store.entry_or_insert_with(topic.as_bytes(), || 0) = i;
            }
            for f in &filters {
                let mut got = Vec::new();
                store.for_each_matched_by(f.as_bytes(), |i| got.push(topics[*i].clone()));
                got.sort();
                got.dedup();
                let mut want: Vec<String> = topics.iter().filter(|t| filter_matches(f.as_bytes(), t.as_bytes())).cloned().collect();
                want.sort();
                want.dedup();
                prop_assert_eq!(got, want, "filter {}", f);
            }
        }
    }
}
