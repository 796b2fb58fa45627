// Package inbox is each user's view of their conversations: the list ordered by last activity
// with previews, read positions and unread counts (the other members' text messages after the
// read position, counted from the stored messages, so they cannot drift), marking read
// (forward only), and sync: what a reconnecting device missed since its since-token and after
// its cursors, in pages.
package inbox
