"""Open Images V5 / Challenge 2019: readers, the challenge detection metric, submissions."""
