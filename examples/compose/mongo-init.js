// The sample catalog database (MongoDB 7 in the compose stack; scripts/demo.sh writes the same
// documents with pymongo). Pre-images on, so each update lands as the exact document of that
// change.
const catalog = db.getSiblingDB("catalog");
catalog.createCollection("reviews", { changeStreamPreAndPostImages: { enabled: true } });
const countries = ["FR", "DE", "JP"];
catalog.reviews.insertMany(
  Array.from({ length: 50 }, (_, i) => ({
    _id: i + 1,
    product_id: NumberLong((i % 20) + 1),
    rating: (i % 5) + 1,
    text: `review ${i + 1}`,
    author: { name: `user${i + 1}`, country: countries[i % 3] },
    tags: i % 2 === 0 ? ["verified"] : [],
    created_at: new Date(Date.UTC(2024, 0, 1) + (i + 1) * 3600000),
  }))
);
