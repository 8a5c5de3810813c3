// Module XDirectorTestSupport.
