// X-Amz-Date must be a real calendar time in ISO 8601 basic format: Date.UTC alone rolled impossible values over (hour
// 25 became the next day, 30 February became March), so a request could carry a date that does not exist.
import { expect, it } from 'vitest';
import { parseAmzDate } from '../../src/http/sigv4.js';

it.each([
  ['20240101T120000Z', Date.UTC(2024, 0, 1, 12, 0, 0)],
  ['20240229T235959Z', Date.UTC(2024, 1, 29, 23, 59, 59)],
  ['19991231T000000Z', Date.UTC(1999, 11, 31, 0, 0, 0)],
])('takes %s', (value, expected) => {
  expect(parseAmzDate(value)).toBe(expected);
});

it.each(['20261206T253000Z', '20261301T000000Z', '20230229T000000Z', '20261200T000000Z', '20261206T126000Z', '20261206T120060Z', '20240101T120000', '2024-01-01T12:00:00Z'])(
  'refuses %s',
  (value) => {
    expect(parseAmzDate(value)).toBeUndefined();
  },
);
