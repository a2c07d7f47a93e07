-- Engagement truth (docs/engagement.md): what the hot path saw of each request, kept compactly so
-- that a verdict can be judged again later (deferred rules, `trackd explain`) without keeping the
-- request. Both columns are NULL on rows recorded before this migration (no evidence kept).
ALTER TABLE events ADD COLUMN evidence smallint;
ALTER TABLE events ADD COLUMN addr_tag smallint;

COMMENT ON COLUMN events.evidence IS
    'what the request showed, as bits: 1 HEAD, 2 a prefetch header (Purpose, Sec-Purpose, X-Purpose, X-Moz), '
    '4 Accept-Language sent, 8 Sec-Fetch-* sent, 16 the client address is in a certain network list entry for this kind, '
    '32 ... in a probable one, 64 a honeypot link (docs/engagement.md); NULL before evidence was kept';
COMMENT ON COLUMN events.addr_tag IS
    'a few keyed bits of the full client address (made before anonymising): with ip, tells the addresses of one '
    'recipient''s events apart (address bursts, a scan''s address) and never names one: next to an IPv4 /24, one of 16 '
    'values shared by 16 hosts each; next to an IPv6 /48 or with no address kept, 8 bits (docs/engagement.md)';
COMMENT ON COLUMN events.machine_reason IS
    'why is_machine is true: one or more reason codes, comma separated (docs/engagement.md); NULL for a person';
