"""What is known about models, below the data checks that use it: names, aliases and sunsets
(names), prices (prices, prices.toml), exact token counters (tokens), Azure's model table
(azure)."""
