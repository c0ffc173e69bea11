"""Generate the toy ADE20K-style dataset used for CPU smoke training.

Example::

    python tools/make_toy_data.py                       # data/toy_ade
    python tools/make_toy_data.py --num-train 200 --overwrite
"""
import argparse
import time

from davpt_seg.datasets import generate_toy_dataset


def parse_args():
    parser = argparse.ArgumentParser(
        description='Generate the toy ADE20K-style segmentation dataset')
    parser.add_argument(
        '--root', default='data/toy_ade', help='dataset root directory')
    parser.add_argument(
        '--num-train', type=int, default=96, help='number of train images')
    parser.add_argument(
        '--num-val', type=int, default=24, help='number of val images')
    parser.add_argument(
        '--img-size', type=int, default=128, help='image height and width')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='regenerate even if a matching dataset already exists')
    return parser.parse_args()


def main():
    args = parse_args()
    start = time.perf_counter()
    info = generate_toy_dataset(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        img_size=args.img_size,
        seed=args.seed,
        overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    if info['generated']:
        print(f"Wrote toy dataset to {info['root']} in {elapsed:.2f} s")
    else:
        print(f"Toy dataset in {info['root']} is up to date "
              '(use --overwrite to regenerate)')
    counts = dict(training=info['num_train'], validation=info['num_val'])
    for split, num in counts.items():
        print(f'  {split:<10}: {num} images ({info["img_size"]} px) in '
              f"images/{split}, annotations in annotations/{split}")
    print(f"  classes   : {info['num_classes']} "
          f"({', '.join(info['classes'])}), seed {info['seed']}")


if __name__ == '__main__':
    main()
