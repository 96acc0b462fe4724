# The two commands of the README. Both create/reuse .venv and install what is missing.
.PHONY: book test clean

book:  ## build the book into _build/html (embedded synthetic data by default)
	bash scripts/book.sh

test:  ## unit tests, chapters under nbval, regression notebooks, strict book build
	bash scripts/test.sh

clean:  ## remove the built book and its execution cache
	rm -rf _build
