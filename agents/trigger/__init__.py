"""The trigger source (type ``trigger``): part-present events with part ids that never repeat."""
