"""The .mz file format, readable without torch or the model (specified in docs/FORMAT.md):

* ``container``: the writer, the strict reader, the header (profiles, schema, dictionary) and
  ``section_offsets`` (where each length field sits; the fuzzer uses it);
* ``frames``: framed files (containers back to back, a seek table and a footer at the end) for inputs
  larger than one frame: the writer and the strict reader;
* ``tokencoder``: the arithmetic coder of the token streams;
* ``vectors``: memory-vector codes as stored (their sizes, header field and byte checks).
"""
