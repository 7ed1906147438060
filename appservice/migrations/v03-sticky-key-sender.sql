-- v2 -> v3: sticky call memberships keyed by their sender
-- MSC4354 keys sticky events by sender, so one member's key must not replace
-- or end another's membership. Rows of kind msc4143 take their sender into the
-- key, as ParseCallMember now writes them for sticky events. A row that came
-- from an rtc.member state event (early MSC4143 drafts) is rewritten too; its
-- leave then finds no row, and the row lapses within the hour every msc4143
-- membership lapses in.
UPDATE as_call_member SET member_key = user_id || ' ' || member_key WHERE kind = 'msc4143';
