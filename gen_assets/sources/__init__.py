"""Pure readers that turn a configured source (builtin corpus, folder, file, URL) into rows."""
