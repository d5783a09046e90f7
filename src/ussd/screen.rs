//! Screens that fit a handset: every screen is laid out as fixed head lines, a list of item
//! lines that paginates (`0 Next` / `00 Back`), and fixed foot lines, within
//! [`BODY_LIMIT`] characters so that `CON `/`END ` plus the body fits [`SCREEN_LIMIT`].

use serde::{Deserialize, Serialize};

use crate::proto::ussd::SCREEN_LIMIT;

/// Characters a screen body may have: the limit less the 4-character `CON `/`END ` prefix.
pub const BODY_LIMIT: usize = SCREEN_LIMIT - 4;
/// The option that shows the next page.
pub const NEXT: &str = "0 Next";
/// The option that goes back (a page, or up a menu).
pub const BACK: &str = "00 Back";
/// Shortest a head line is cut to before head lines are dropped.
const MIN_HEAD: usize = 12;

/// One screen: its text (without prefix) and whether the session ends with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screen {
    /// The body, at most [`BODY_LIMIT`] characters.
    pub text: String,
    /// True for `END`, false for `CON`.
    pub end: bool,
}

impl Screen {
    /// The text as the handset shows it, with its prefix.
    pub fn wire(&self) -> String {
        format!("{}{}", if self.end { "END " } else { "CON " }, self.text)
    }

    /// A final screen: `text` cut to fit if needed.
    pub fn end(text: &str) -> Self {
        Self {
            text: cut(&clean(text), BODY_LIMIT),
            end: true,
        }
    }
}

/// What a screen shows, before pagination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Always shown first (a notice, a title); cut to fit.
    pub head: Vec<String>,
    /// The paginated part.
    pub items: Vec<String>,
    /// Wrap long items over several lines (details) instead of cutting them (lists).
    pub wrap: bool,
    /// Always shown after the items (prompts, options): short texts of our own.
    pub foot: Vec<String>,
    /// Offer `00 Back`.
    pub back: bool,
}

/// A laid-out page: the body and whether a next page exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The body text.
    pub text: String,
    /// True when `0 Next` is offered.
    pub has_next: bool,
}

impl Layout {
    /// The item lines of every page.
    fn pages(&self, width: usize, room: usize) -> Vec<Vec<String>> {
        let lines: Vec<String> = if self.wrap {
            self.items
                .iter()
                .flat_map(|i| wrap(&clean(i), width))
                .collect()
        } else {
            self.items.iter().map(|i| cut(&clean(i), width)).collect()
        };
        let mut pages = Vec::new();
        let mut current: Vec<String> = Vec::new();
        let mut used = 0;
        for line in lines {
            let cost = line.chars().count() + 1;
            if !current.is_empty() && used + cost > room {
                pages.push(std::mem::take(&mut current));
                used = 0;
            }
            used += cost;
            current.push(line);
        }
        if !current.is_empty() || pages.is_empty() {
            pages.push(current);
        }
        pages
    }

    /// The head lines, the item width and the room items have on a page (each item line
    /// costing its length plus a newline).
    fn budget(&self) -> (Vec<String>, usize, usize) {
        let foot: usize = self.foot.iter().map(|l| l.chars().count() + 1).sum();
        let mut nav = 0;
        if !self.items.is_empty() {
            nav += NEXT.len() + 1;
        }
        if self.back {
            nav += BACK.len() + 1;
        }
        // Items get at least a line of 24 characters (or what is left).
        let item_floor = if self.items.is_empty() { 0 } else { 25 };
        let head_room = BODY_LIMIT
            .saturating_sub(foot + nav + item_floor)
            .saturating_add(1);
        let head = fit(
            &self.head.iter().map(|l| clean(l)).collect::<Vec<_>>(),
            head_room,
        );
        let head_cost: usize = head.iter().map(|l| l.chars().count() + 1).sum();
        // The body's last line has no newline after it: one character to spare.
        let room = (BODY_LIMIT + 1).saturating_sub(head_cost + foot + nav);
        let width = room.saturating_sub(1).max(1);
        (head, width, room)
    }

    /// Number of pages.
    pub fn page_count(&self) -> usize {
        let (_, width, room) = self.budget();
        self.pages(width, room).len()
    }

    /// Page `page` (the last one if past the end).
    pub fn render(&self, page: usize) -> Page {
        let (head, width, room) = self.budget();
        let pages = self.pages(width, room);
        let index = page.min(pages.len().saturating_sub(1));
        let has_next = index + 1 < pages.len();
        let mut lines = head;
        if let Some(items) = pages.get(index) {
            lines.extend(items.iter().cloned());
        }
        lines.extend(self.foot.iter().cloned());
        if has_next {
            lines.push(NEXT.to_owned());
        }
        if self.back {
            lines.push(BACK.to_owned());
        }
        Page {
            text: lines.join("\n"),
            has_next,
        }
    }
}

/// Text from outside (names, addresses) on one line: control characters become spaces.
pub fn clean(text: &str) -> String {
    let spaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut to `max` characters, ending in `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// `text` over lines of at most `width` characters, broken at spaces where possible.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let line_len = line.chars().count();
            let sep = usize::from(line_len > 0);
            if line_len + sep + word.len() <= width {
                if sep == 1 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if line_len > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than a line: split it.
            let rest = word.split_off(width);
            lines.push(word.iter().collect());
            word = rest;
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Lines cut so that they and their newlines take at most `room` characters: the longest
/// line is shortened first, down to [`MIN_HEAD`]; then lines are dropped from the end.
fn fit(lines: &[String], room: usize) -> Vec<String> {
    let mut lines: Vec<String> = lines.to_vec();
    let cost = |lines: &[String]| -> usize { lines.iter().map(|l| l.chars().count() + 1).sum() };
    while cost(&lines) > room {
        let excess = cost(&lines) - room;
        let longest = lines
            .iter()
            .enumerate()
            .max_by_key(|(_, l)| l.chars().count())
            .map(|(i, l)| (i, l.chars().count()));
        match longest {
            Some((i, len)) if len > MIN_HEAD => {
                let target = len.saturating_sub(excess).max(MIN_HEAD);
                if let Some(line) = lines.get_mut(i) {
                    *line = cut(line, target);
                }
            }
            _ => {
                lines.pop();
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_list(n: usize, len: usize) -> Layout {
        Layout {
            head: vec!["Orders, newest first:".into()],
            items: (1..=n)
                .map(|i| format!("#{i} {}", "x".repeat(len)))
                .collect(),
            foot: vec!["Reply with an order no.".into()],
            back: true,
            ..Layout::default()
        }
    }

    #[test]
    fn a_short_list_is_one_page_with_back_only() {
        let page = long_list(2, 5).render(0);
        assert_eq!(
            page.text,
            "Orders, newest first:\n#1 xxxxx\n#2 xxxxx\nReply with an order no.\n00 Back"
        );
        assert!(!page.has_next);
    }

    #[test]
    fn long_lists_paginate_and_every_item_shows_once() {
        let layout = long_list(40, 12);
        let pages = layout.page_count();
        assert!(pages > 1);
        let mut seen = Vec::new();
        for p in 0..pages {
            let page = layout.render(p);
            assert!(page.text.chars().count() <= BODY_LIMIT, "{}", page.text);
            assert_eq!(page.has_next, p + 1 < pages);
            assert_eq!(page.text.contains("\n0 Next\n"), page.has_next);
            assert!(page.text.ends_with("00 Back"));
            seen.extend(
                page.text
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        assert_eq!(seen, layout.items);
    }

    #[test]
    fn long_items_are_cut_in_lists_and_wrapped_in_details() {
        let item = "word ".repeat(100);
        let list = Layout {
            items: vec![item.clone()],
            ..Layout::default()
        };
        let page = list.render(0);
        assert!(page.text.ends_with('…') && !page.has_next, "{}", page.text);
        let detail = Layout {
            items: vec![item],
            wrap: true,
            back: true,
            ..Layout::default()
        };
        let pages = detail.page_count();
        assert!(pages >= 3);
        let words: usize = (0..pages)
            .map(|p| detail.render(p).text.matches("word").count())
            .sum();
        assert_eq!(words, 100, "wrapping loses nothing");
    }

    #[test]
    fn heads_are_cut_to_leave_room_for_options() {
        let layout = Layout {
            head: vec!["N".repeat(150), "M".repeat(150)],
            foot: vec!["1 Yes".into(), "2 No".into()],
            back: true,
            ..Layout::default()
        };
        let text = layout.render(0).text;
        assert!(text.chars().count() <= BODY_LIMIT, "{text}");
        assert!(text.ends_with("1 Yes\n2 No\n00 Back"), "{text}");
    }

    #[test]
    fn wrapping_and_cleaning() {
        assert_eq!(wrap("ab cd ef", 5), ["ab cd", "ef"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(clean("a\n b\tc"), "a b c");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(
            Screen::end(&"x".repeat(500)).wire().chars().count(),
            SCREEN_LIMIT
        );
    }
}
