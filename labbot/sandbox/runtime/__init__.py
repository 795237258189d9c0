"""Code that runs INSIDE the sandbox. It imports only the standard library and the data stack,
never ``labbot``; the host imports ``protocol`` from here to speak to it."""
