// Entry point placeholder, replaced by the CLI.
print("xdirector")
