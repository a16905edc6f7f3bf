//! The training set in memory: the teacher's outputs for every training image computed once
//! (no augmentation, so identical to a per-step teacher forward, as in the reference), the
//! preprocessed images for the EE student, and the data order of each step.

use super::teacher::Teacher;
use crate::device::rng::mix64;
use crate::device::{Backend, Tensor};
use crate::error::{Error, Result};
use crate::tensor::{HostTensor, Rng};

/// Host copies of the teacher's outputs for every training image, and the images.
pub struct FeatureCache {
    pub n: usize,
    /// Per image: the ED input `[Ns, D]`, each group's patches `[P, D]`, the class token `[D]`,
    /// the preprocessed image `[3, H, W]`.
    pub fused: Vec<Vec<f32>>,
    pub groups: Vec<Vec<Vec<f32>>>,
    pub cls: Vec<Vec<f32>>,
    pub images: Vec<Vec<f32>>,
    pub fused_dims: [usize; 2],
    pub patch_dims: [usize; 2],
    pub image_dims: [usize; 3],
}

impl FeatureCache {
    /// Run the teacher over `images` (each `[3, H, W]`) in batches of `batch`.
    pub fn build<B: Backend>(
        backend: &B,
        teacher: &mut Teacher<B>,
        images: Vec<HostTensor>,
        batch: usize,
    ) -> Result<Self> {
        let first = images
            .first()
            .ok_or_else(|| Error::Invalid("no training images".into()))?;
        let image_dims: [usize; 3] = first.dims().try_into().map_err(|_| {
            Error::Invalid(format!(
                "training image is {:?}, expected [3, H, W]",
                first.dims()
            ))
        })?;
        let ng = teacher.groups().len();
        let mut c = FeatureCache {
            n: images.len(),
            fused: vec![],
            groups: vec![vec![]; ng],
            cls: vec![],
            images: vec![],
            fused_dims: [0; 2],
            patch_dims: [0; 2],
            image_dims,
        };
        for chunk in images.chunks(batch.max(1)) {
            let x = stack(chunk)?;
            let f = teacher.features(backend, &backend.upload(&x)?)?;
            let fused = backend.download(f.fused)?;
            c.fused_dims = [fused.dims()[1], fused.dims()[2]];
            c.fused.extend(split_rows(fused, chunk.len()));
            for (g, t) in f.groups.iter().enumerate() {
                let h = backend.download(t)?;
                c.patch_dims = [h.dims()[1], h.dims()[2]];
                c.groups[g].extend(split_rows(h, chunk.len()));
            }
            let cls = f.cls.ok_or_else(|| {
                Error::Invalid("the EE student needs the teacher's class token".into())
            })?;
            c.cls
                .extend(split_rows(backend.download(cls)?, chunk.len()));
            c.images.extend(chunk.iter().map(|t| t.data.clone()));
        }
        Ok(c)
    }

    /// Device tensors of the images `idx`: (ED input, groups, class tokens, images).
    pub fn batch<B: Backend>(&self, backend: &B, idx: &[usize]) -> Result<Batch<B>> {
        let b = idx.len();
        let gather = |src: &[Vec<f32>], dims: &[usize]| -> Result<Tensor<B>> {
            let mut data = Vec::with_capacity(b * dims.iter().product::<usize>());
            idx.iter().for_each(|&i| data.extend_from_slice(&src[i]));
            let mut shape = vec![b];
            shape.extend_from_slice(dims);
            backend.upload(&HostTensor::new(shape.as_slice(), data)?)
        };
        let d = self.patch_dims[1];
        Ok(Batch {
            fused: gather(&self.fused, &self.fused_dims)?,
            groups: self
                .groups
                .iter()
                .map(|g| gather(g, &self.patch_dims))
                .collect::<Result<_>>()?,
            cls: gather(&self.cls, &[d])?,
            images: gather(&self.images, &self.image_dims)?,
        })
    }
}

pub struct Batch<B: Backend> {
    pub fused: Tensor<B>,
    pub groups: Vec<Tensor<B>>,
    pub cls: Tensor<B>,
    pub images: Tensor<B>,
}

impl<B: Backend> Batch<B> {
    pub fn group_refs(&self) -> Vec<&Tensor<B>> {
        self.groups.iter().collect()
    }
}

/// `[B, ...]` from `B` tensors of one shape.
pub fn stack(ts: &[HostTensor]) -> Result<HostTensor> {
    let dims = ts.first().map(|t| t.dims().to_vec()).unwrap_or_default();
    let mut data = Vec::with_capacity(ts.len() * dims.iter().product::<usize>());
    for t in ts {
        if t.dims() != dims.as_slice() {
            return Err(Error::Invalid(format!(
                "images of different sizes {:?} and {dims:?}",
                t.dims()
            )));
        }
        data.extend_from_slice(&t.data);
    }
    let mut shape = vec![ts.len()];
    shape.extend(dims);
    HostTensor::new(shape.as_slice(), data)
}

fn split_rows(t: HostTensor, n: usize) -> Vec<Vec<f32>> {
    let per = t.data.len() / n.max(1);
    t.data.chunks(per.max(1)).map(<[f32]>::to_vec).collect()
}

/// The images of training step `it`: Dinomaly's loader (shuffle, drop_last) with a
/// permutation per epoch drawn from (seed, epoch).
pub fn batch_indices(seed: u64, it: u64, n: usize, batch: usize) -> Result<Vec<usize>> {
    let per_epoch = n / batch.max(1);
    if per_epoch == 0 {
        return Err(Error::Invalid(format!(
            "{n} training images are fewer than one batch of {batch}; lower --batch"
        )));
    }
    let (epoch, pos) = (it / per_epoch as u64, (it % per_epoch as u64) as usize);
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(mix64(seed ^ mix64(epoch.wrapping_add(0x5EED)))).shuffle(&mut order);
    Ok(order[pos * batch..(pos + 1) * batch].to_vec())
}
